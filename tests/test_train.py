"""Training through a real MMEngine Runner: resume after kill -9, DDP over gloo, safe loading."""

import fractions
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
from conftest import REPO, run_cli, snakemake, snakemake_call


def train_cli(run_dir, work, *extra, check=True):
    return run_cli(
        "train",
        "--prepared",
        run_dir / "results/data/prepared",
        "--palette",
        run_dir / "results/data/palette.json",
        "--out-model",
        work / "best.pth",
        "--out-history",
        work / "history.json",
        "--work-root",
        work / "ckpt",
        "--model",
        "lraspp_mobilenet_v3_large",
        "--device",
        "cpu",
        "--crop-size",
        "32",
        "48",
        "--warmup-iters",
        "2",
        "--log-interval",
        "1",
        "--threads",
        "1",
        *extra,
        check=check,
    )


def test_cpu_run_uses_plain_optim_wrapper(tiny_run):
    log = (tiny_run / "results/logs/train.log").read_text()
    assert "device: cpu; optim wrapper: OptimWrapper" in log
    assert "AmpOptimWrapper" not in log
    from camvidseg.train import optim_wrapper_config, parse_args

    args = parse_args(
        [
            "--prepared",
            "p",
            "--palette",
            "p",
            "--out-model",
            "m",
            "--out-history",
            "h",
            "--work-root",
            "w",
            "--amp",
        ]
    )
    assert optim_wrapper_config(args, "cpu")["type"] == "OptimWrapper"


def test_cpu_training_never_constructs_amp_wrapper(tiny_run, tmp_path, monkeypatch):
    from mmengine.optim import AmpOptimWrapper

    def refuse(*args, **kwargs):
        raise AssertionError("AmpOptimWrapper constructed on the CPU")

    monkeypatch.setattr(AmpOptimWrapper, "__init__", refuse)
    from camvidseg.train import parse_args, train

    train(
        parse_args(
            [
                "--prepared",
                str(tiny_run / "results/data/prepared"),
                "--palette",
                str(tiny_run / "results/data/palette.json"),
                "--out-model",
                str(tmp_path / "best.pth"),
                "--out-history",
                str(tmp_path / "h.json"),
                "--work-root",
                str(tmp_path / "ckpt"),
                "--model",
                "lraspp_mobilenet_v3_large",
                "--device",
                "cpu",
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--crop-size",
                "32",
                "48",
                "--amp",
                "--threads",
                "1",
            ]
        )
    )
    assert (tmp_path / "best.pth").is_file()


def test_same_seed_same_loss_curve(tiny_run, tmp_path):
    curves = []
    for name in ("a", "b"):
        train_cli(tiny_run, tmp_path / name, "--epochs", "1", "--batch-size", "2", "--seed", "7")
        history = json.loads((tmp_path / name / "history.json").read_text())
        curves.append([r["loss"] for r in history["train"]])
    assert len(curves[0]) == 3 and curves[0] == curves[1]


def test_user_checkpoint_with_pickled_object_is_refused(tiny_run, tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": fractions.Fraction(1, 3)}, evil)  # needs code
    result = train_cli(tiny_run, tmp_path / "w", "--load-from", evil, check=False)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "evil.pth: refused: not a plain weights file" in line
    result = train_cli(tiny_run, tmp_path / "w", "--backbone-weights", evil, check=False)
    assert result.returncode == 2
    assert "evil.pth: refused: not a plain weights file" in result.stderr
    assert "(model.backbone_weights)" in result.stderr


def test_plain_user_weights_are_accepted(tiny_run, tmp_path):
    result = train_cli(
        tiny_run,
        tmp_path / "w",
        "--epochs",
        "1",
        "--load-from",
        tiny_run / "results/model/best.pth",
    )
    assert (tmp_path / "w/best.pth").is_file(), result.stderr


def test_cuda_requested_without_gpu_is_one_line(tiny_run, tmp_path):
    result = run_cli(
        "train",
        "--prepared",
        "x",
        "--palette",
        "x",
        "--out-model",
        "m",
        "--out-history",
        "h",
        "--work-root",
        tmp_path,
        "--device",
        "cuda",
        check=False,
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: train.device: cuda, but no CUDA device is visible (set train.device: cpu)"
    )


def test_killed_training_resumes_from_last_epoch(tmp_path):
    config = REPO / "tests/resume.yaml"
    first, moved = tmp_path / "first", tmp_path / "moved"
    command, env = snakemake_call(first, configfile=config)
    run = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    try:
        while not list(first.glob("results/train_work/*/epoch_1.pth")):
            assert run.poll() is None and time.time() < deadline, "training ended early"
            time.sleep(0.05)
        time.sleep(0.5)  # into epoch 2
        assert not list(first.glob("results/train_work/*/epoch_2.pth"))
        trainer = subprocess.run(
            ["pgrep", "-s", str(run.pid), "-f", r"^\S*python\S* -m camvidseg.train"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert len(trainer) == 1
        os.kill(int(trainer[0]), signal.SIGKILL)  # as the OOM killer or a preemption would
        assert run.wait(timeout=60) != 0  # Snakemake sees the job fail
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert not (first / "results/model/best.pth").exists()

    shutil.move(first, moved)  # checkpoints are found by name: the project may move
    snakemake(moved, configfile=config)
    log = (moved / "results/logs/train.log").read_text()
    assert "resuming from epoch_1.pth" in log
    assert "Epoch(train) [1]" not in log  # epoch 1 was not trained again
    history = json.loads((moved / "results/model/history.json").read_text())
    assert [r["epoch"] for r in history["val"]] == [1, 2, 3]
    losses = [r["loss"] for r in history["train"]]
    assert sum(losses[-5:]) < sum(losses[:5])  # it learns
    assert json.loads((moved / "results/metrics/val.json").read_text())["mIoU"] > 0


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch built without gloo")
def test_two_process_gloo_ddp_matches_single_process(tiny_run, tmp_path):
    runs = {}
    for name, extra in (
        ("single", ["--batch-size", "2"]),
        ("ddp", ["--gpus", "2", "--batch-size", "1"]),
    ):
        result = train_cli(tiny_run, tmp_path / name, "--epochs", "2", "--threads", "2", *extra)
        runs[name] = json.loads((tmp_path / name / "history.json").read_text())
        if name == "ddp":
            assert "--nproc_per_node=2" in result.stdout
    single, ddp = runs["single"]["val"][-1], runs["ddp"]["val"][-1]
    assert abs(single["mIoU"] - ddp["mIoU"]) < 0.15
    assert abs(single["aAcc"] - ddp["aAcc"]) < 0.15
    # The metric reduced over both ranks equals a one-process evaluation of the same weights.
    out = tmp_path / "ddp_eval.json"
    run_cli(
        "evaluate",
        "--model",
        tmp_path / "ddp/best.pth",
        "--prepared",
        tiny_run / "results/data/prepared",
        "--palette",
        tiny_run / "results/data/palette.json",
        "--split",
        "val",
        "--device",
        "cpu",
        "--out-json",
        out,
        "--out-csv",
        tmp_path / "x.csv",
    )
    best_epoch = torch.load(tmp_path / "ddp/best.pth", weights_only=True)["meta"]["epoch"]
    logged = next(r for r in runs["ddp"]["val"] if r["epoch"] == best_epoch)
    assert json.loads(out.read_text())["mIoU"] == pytest.approx(logged["mIoU"], abs=1e-4)
