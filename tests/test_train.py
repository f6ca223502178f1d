"""Training through a real MMEngine Runner: the settings contract, exact resume after kill -9 or a
signal, safe checkpoints, full batches, DDP over gloo, safe loading, TensorBoard scalars."""

import fractions
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, assert_one_line_error, read_only, run_cli, snakemake, snakemake_call

# What every test run trains unless it says otherwise: small, fast, on the CPU.
MODEL = {"name": "lraspp_mobilenet_v3_large", "backbone_weights": "none"}
TRAIN = {"device": "cpu", "crop_size": [32, 48], "warmup_iters": 2, "log_interval": 1}


def settings_json(model=None, train=None) -> str:
    return json.dumps({"model": MODEL | (model or {}), "train": TRAIN | (train or {})})


def train_command(data, work, model=None, train=None, *flags) -> list:
    """Arguments of ``camvidseg train`` on ``data``'s prepared set, writing under ``work``."""
    return ["--settings", settings_json(model, train),
            "--prepared", data / "results/data/prepared",
            "--palette", data / "results/data/palette.json",
            "--out-model", work / "best.pth", "--out-history", work / "history.json",
            "--work-root", work / "ckpt", "--threads", "1", *flags]  # fmt: skip


def train_cli(data, work, model=None, train=None, *flags, check=True, env=None, **limits):
    command = train_command(data, work, model, train, *flags)
    return run_cli("train", *command, check=check, env=env, **limits)


def prepared_sample(tmp_path_factory, name: str, **sizes):
    """A prepared sample set (the workflow's own data stages) with ``sizes`` images per split."""
    root = tmp_path_factory.mktemp(name)
    config = yaml.safe_load((REPO / "tests/tiny.yaml").read_text())
    config["dataset"]["sample"] |= sizes
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(root, "results/data/prepared", "results/data/palette.json",
              configfile=root / "config.yaml")  # fmt: skip
    return root


def state_dicts_equal(a, b) -> bool:
    first = torch.load(a, weights_only=True)["state_dict"]
    second = torch.load(b, weights_only=True)["state_dict"]
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# ---------------------------------------------------------------- settings contract (issue 16)


def test_settings_json_is_the_one_source_of_training_settings(tiny_run, tmp_path):
    log = (tiny_run / "results/logs/train.log").read_text()
    assert "device: cpu; optim wrapper: OptimWrapper (fp32)" in log
    cases = {
        "{not json": "--settings: not JSON",
        "[1, 2]": '--settings: expected a JSON object {"model": {...}, "train": {...}}',
        '{"trian": {}}': "--settings: unknown section(s) trian (expected model, train)",
        '{"train": {"lr": 0.1, "speed": 2}}': "train: unknown setting(s) speed",
    }
    for text, message in cases.items():
        result = run_cli("train", "--settings", text, "--prepared", "p", "--palette", "p",
                         "--out-model", "m", "--out-history", "h", "--work-root", tmp_path,
                         check=False)  # fmt: skip
        assert_one_line_error(result, message)
    # Missing keys take the schema's defaults: train.device defaults to cuda.
    result = run_cli("train", "--settings", '{"model": {"backbone_weights": "none"}}',
                     "--prepared", tiny_run / "results/data/prepared",
                     "--palette", tiny_run / "results/data/palette.json", "--out-model", "m",
                     "--out-history", "h", "--work-root", tmp_path, check=False,
                     env={"CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    assert_one_line_error(result, "train.device: cuda, but CUDA is unavailable")


def test_fingerprint_keys_on_what_changes_the_result(tiny_run, monkeypatch):
    from camvidseg.core import settings
    from camvidseg.training.train import fingerprint
    from camvidseg.workflow import codegraph

    def key(model=None, train=None, device="cpu", gpus=1):
        resolved = settings.resolve("model", model), settings.resolve("train", train)
        data = tiny_run / "results/data"
        return fingerprint(*resolved, device, gpus, data / "prepared", data / "palette.json")

    base = key()
    assert base == key(train={"log_interval": 1, "num_workers": 3, "max_keep_ckpts": 5})
    assert base == key(train={"device": "auto"})  # the device auto became is what counts
    assert base != key(train={"lr": 0.001})
    assert base != key(model={"aux_loss_weight": 0.0})
    assert base != key(device="cuda")
    assert base != key(gpus=2)
    monkeypatch.setattr(codegraph, "source_digest", lambda module: "code edited")
    assert base != key()


# ---------------------------------------------------------------- named steps, device (16, 15)


def test_cpu_run_uses_plain_optim_wrapper(tiny_run):
    log = (tiny_run / "results/logs/train.log").read_text()
    assert "device: cpu; optim wrapper: OptimWrapper" in log
    assert "AmpOptimWrapper" not in log
    from camvidseg.core import settings
    from camvidseg.core.device import precision
    from camvidseg.training.train import optim_wrapper_config

    train = settings.resolve("train", {"amp": True})
    assert optim_wrapper_config(train, precision("cpu", train["amp"]))["type"] == "OptimWrapper"


def test_loader_workers_are_decided_in_the_job_on_the_device_it_got():
    """The one loader-worker policy (the workflow passes none): --num-workers, else
    train.num_workers, else -1: on a GPU the threads feed each of its processes (not divided down
    to one per rank); on the CPU they compute and loading stays in the process."""
    import argparse

    from camvidseg.training.train import loader_workers

    def args(flag=None, configured=-1, threads=8, gpus=2):
        return argparse.Namespace(num_workers=flag, train={"num_workers": configured},
                                  threads=threads, gpus=gpus)  # fmt: skip

    assert loader_workers(args(), "cuda") == 8  # per process, not 8 // 2
    assert loader_workers(args(threads=4, gpus=8), "cuda") == 4  # not 0 or 1
    assert loader_workers(args(threads=1), "cuda") == 1
    assert loader_workers(args(), "cpu") == 0
    assert loader_workers(args(configured=3), "cuda") == 3
    assert loader_workers(args(flag=5, configured=3), "cpu") == 5
    rule = (REPO / "workflow/rules/train.smk").read_text()
    assert "--num-workers" not in rule


def test_runner_config_reads_as_a_table():
    from camvidseg.core import settings
    from camvidseg.data.dataset import SameSizeBatches
    from camvidseg.training import resume
    from camvidseg.training.async_steps import AutocastOptimWrapper, DeferredLossHook
    from camvidseg.training.train import Run, as_ran, runner_config

    train = settings.resolve("train", {"batch_size": 3, "seed": 5, "max_keep_ckpts": 4})
    cpu = Run("cpu", "fp32", distributed=True, workers=0, work_dir=REPO / "w", resume_from=None)
    config = runner_config(train, cpu)
    loader = config["train_dataloader"]
    assert loader["drop_last"] and loader["batch_size"] == 3
    assert loader["sampler"] == {"type": resume.SeededSampler, "shuffle": True, "seed": 5}
    val = config["val_dataloader"]  # batched like training, one image size per batch
    assert val["batch_size"] == 3 and val["batch_sampler"] == {"type": SameSizeBatches}
    assert "drop_last" not in val  # a batch sampler may not be given one
    runtime = config["default_hooks"]["runtime_info"]
    assert runtime == {"type": DeferredLossHook, "interval": train["log_interval"]}
    assert config["train_cfg"]["type"] is resume.ResumableEpochLoop
    checkpoint = config["default_hooks"]["checkpoint"]
    assert checkpoint["backend_args"] == resume.ATOMIC_WRITES
    assert checkpoint["max_keep_ckpts"] == 4 and checkpoint["save_best"] == "mIoU"
    assert config["optim_wrapper"]["type"] == "OptimWrapper"
    assert config["cfg"]["model_wrapper_cfg"]["device_ids"] is None  # DDP on the CPU
    # ... and so in what the Runner reads (left out, MMEngine would give the CPU a device id)
    assert as_ran(config)["model_wrapper_cfg"]["device_ids"] is None
    assert config["env_cfg"]["dist_cfg"] == {"backend": "gloo"}
    assert {"type": "TensorboardVisBackend", "save_dir": str(REPO / "w/tensorboard")} in config[
        "visualizer"
    ]["vis_backends"]
    assert not config["resume"] and config["load_from"] is None
    cuda = Run("cuda", "bf16", False, 4, REPO / "w", resume_from=REPO / "w/iter_7.pth")
    config = runner_config(train | {"deterministic": True}, cuda)
    assert config["optim_wrapper"]["type"] is AutocastOptimWrapper  # no GradScaler under bf16
    assert config["optim_wrapper"]["dtype"] == "bfloat16"
    assert config["cfg"]["model_wrapper_cfg"] is None
    assert config["env_cfg"]["cudnn_benchmark"] is False  # deterministic
    assert config["randomness"] == {"seed": 5}
    loader = config["train_dataloader"]
    assert loader["pin_memory"] and loader["num_workers"] == 4
    assert config["resume"] and config["load_from"].endswith("w/iter_7.pth")


@pytest.mark.parametrize(
    ("optimizer", "kind"), [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_configured_optimizer_and_warmup_are_what_mmengine_builds(optimizer, kind):
    """The settings reach the optimizer MMEngine builds from the Runner's config, and its LR
    warm-up climbs linearly from 1/1000 of the configured rate to all of it at the last of its
    warmup_iters iterations (MMEngine's LinearLR covers iterations [begin, end))."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS

    from camvidseg.core import settings
    from camvidseg.training.train import Run, runner_config

    train = settings.resolve("train", {"optimizer": optimizer, "lr": 0.0123,
                                       "weight_decay": 0.0456, "warmup_iters": 4})  # fmt: skip
    cpu = Run("cpu", "fp32", distributed=False, workers=0, work_dir=REPO / "w", resume_from=None)
    config = runner_config(train, cpu)
    wrapper = build_optim_wrapper(torch.nn.Conv2d(3, 2, 1), config["optim_wrapper"])
    assert type(wrapper.optimizer) is kind
    (group,) = wrapper.optimizer.param_groups
    assert group["lr"] == 0.0123 and group["weight_decay"] == 0.0456
    warmup = PARAM_SCHEDULERS.build(config["param_scheduler"][0] | {"optimizer": wrapper})
    rates = []
    for _ in range(6):
        rates.append(group["lr"])
        warmup.step()
    expected = [0.0123 * (0.001 + 0.999 * min(i, 3) / 3) for i in range(6)]
    assert rates == pytest.approx(expected)


def test_cpu_training_never_constructs_amp_wrapper(tiny_run, tmp_path, monkeypatch):
    from mmengine.optim import AmpOptimWrapper

    def refuse(*args, **kwargs):
        raise AssertionError("AmpOptimWrapper constructed on the CPU")

    monkeypatch.setattr(AmpOptimWrapper, "__init__", refuse)
    from camvidseg.training.train import parse_args, train

    args = train_command(tiny_run, tmp_path, None, {"epochs": 1, "batch_size": 2, "amp": True})
    train(parse_args(list(map(str, args))))
    assert (tmp_path / "best.pth").is_file()


def test_cuda_requested_without_gpu_is_one_line(tiny_run, tmp_path):
    result = train_cli(tiny_run, tmp_path, None, {"device": "cuda"}, check=False,
                       env={"CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: train.device: cuda, but CUDA is unavailable: CUDA_VISIBLE_DEVICES='' hides every "
        "GPU (set train.device to cpu)"
    )
    assert not (tmp_path / "ckpt").exists()


# ---------------------------------------------------------------- reproducibility, weights


def test_same_seed_same_loss_curve(tiny_run, tmp_path):
    curves = []
    for name in ("a", "b"):
        train_cli(tiny_run, tmp_path / name, None, {"epochs": 1, "batch_size": 2, "seed": 7})
        history = json.loads((tmp_path / name / "history.json").read_text())
        curves.append([r["loss"] for r in history["train"]])
    assert len(curves[0]) == 3 and curves[0] == curves[1]


def test_user_checkpoint_with_pickled_object_is_refused(tiny_run, tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": fractions.Fraction(1, 3)}, evil)  # needs code
    result = train_cli(tiny_run, tmp_path / "w", None, {"load_from": str(evil)}, check=False)
    assert_one_line_error(result, "evil.pth: refused: not a plain weights file")
    result = train_cli(tiny_run, tmp_path / "w", {"backbone_weights": str(evil)}, check=False)
    assert_one_line_error(result, "evil.pth: refused: not a plain weights file")
    assert "(model.backbone_weights)" in result.stderr
    assert not list((tmp_path / "w").glob("ckpt/*"))  # a failed start leaves no work dir (11.10)


def test_failure_inside_the_runner_leaves_no_work_dir(tiny_run, tmp_path):
    data = tmp_path / "data/results/data"
    shutil.copytree(tiny_run / "results/data/prepared", data / "prepared")
    shutil.copy(tiny_run / "results/data/palette.json", data / "palette.json")
    index = json.loads((data / "prepared/index.json").read_text())
    del index["cache"]  # read the images, which this copy lacks: the first batch fails
    (data / "prepared/index.json").write_text(json.dumps(index))
    result = train_cli(tmp_path / "data", tmp_path / "w", None, {"epochs": 1}, check=False)
    assert_one_line_error(result, "unreadable image")
    assert "Epoch(train)" not in result.stdout
    assert (tmp_path / "w/ckpt").is_dir() and not list((tmp_path / "w/ckpt").iterdir())


def test_a_checkpoint_past_the_file_size_limit_is_one_line_naming_it(tiny_run, tmp_path):
    """The logs fit in 1 MiB, the first checkpoint (a few MB) does not."""
    result = train_cli(
        tiny_run, tmp_path / "w", None, {"epochs": 1}, check=False, max_file_bytes=2**20
    )
    assert_one_line_error(result, ".pth: cannot write: over the file-size limit (ulimit -f)")
    assert not list((tmp_path / "w/ckpt").rglob("*.pth")) and not (tmp_path / "w/best.pth").exists()


def test_a_read_only_checkpoint_folder_is_one_line_naming_it(tiny_run, tmp_path):
    (tmp_path / "w").mkdir()
    with read_only(tmp_path / "w"):
        result = train_cli(tiny_run, tmp_path / "w", None, {"epochs": 1}, check=False)
    assert_one_line_error(result, f"{tmp_path / 'w'}")
    assert "cannot write" in result.stderr


def test_plain_user_weights_are_accepted(tiny_run, tmp_path):
    weights = str(tiny_run / "results/model/best.pth")
    result = train_cli(tiny_run, tmp_path / "w", None, {"epochs": 1, "load_from": weights})
    assert (tmp_path / "w/best.pth").is_file(), result.stderr
    assert "warning" not in result.stderr


def test_load_from_another_class_count_skips_the_head(tiny_run, tmp_path):
    from camvidseg.training.model import SegmentationModel, load_initial_weights

    other = SegmentationModel("lraspp_mobilenet_v3_large", 5, 0.4)
    torch.save({"state_dict": other.state_dict()}, tmp_path / "five.pth")
    result = train_cli(tiny_run, tmp_path / "w", None,
                       {"epochs": 1, "load_from": str(tmp_path / "five.pth")})  # fmt: skip
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    layers = ("high_classifier", "low_classifier")
    head = [f"net.classifier.{layer}.{kind}" for layer in layers for kind in ("bias", "weight")]
    assert len(warnings) == 1 and warnings[0].endswith(": " + ", ".join(head)), result.stderr
    assert "4 tensors of another shape left as initialised" in warnings[0]
    # Everything else really is loaded.
    model = SegmentationModel("lraspp_mobilenet_v3_large", 31, 0.4)
    assert load_initial_weights(model, tmp_path / "five.pth") == head
    loaded, source = model.state_dict(), other.state_dict()
    assert all(torch.equal(loaded[k], source[k]) for k in source if k not in head)


# ---------------------------------------------------------------- full batches (11.2)


@pytest.fixture(scope="module")
def four_images(tmp_path_factory):
    return prepared_sample(tmp_path_factory, "four", train=4, val=1, test=1)


def test_last_incomplete_batch_is_dropped_on_deeplabv3(four_images, tmp_path):
    """4 images in batches of 3: without dropping the last batch of 1, BatchNorm in DeepLabV3's
    image pooling fails ("Expected more than 1 value per channel")."""
    result = train_cli(four_images, tmp_path, {"name": "deeplabv3_resnet50"},
                       {"epochs": 2, "batch_size": 3})  # fmt: skip
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["iter"] for r in history["train"]] == [1, 2], result.stdout  # one batch per epoch
    assert [r["epoch"] for r in history["val"]] == [1, 2]
    one = train_cli(four_images, tmp_path, {"name": "deeplabv3_resnet50"}, {"batch_size": 1},
                    check=False)  # fmt: skip
    assert_one_line_error(one, "train.batch_size: 1 per process, but deeplabv3_resnet50's image")
    five = train_cli(four_images, tmp_path, None, {"batch_size": 5}, check=False)
    assert_one_line_error(five, "train.batch_size: 5 x 1 process(es) is more than the 4 training")


# ---------------------------------------------------------------- exact resume (10.5, 11.3, 15)

RESUMED = {"epochs": 3, "batch_size": 2, "lr": 0.002}  # 16 images: 8 iterations per epoch


@pytest.fixture(scope="module")
def sixteen_images(tmp_path_factory):
    return prepared_sample(tmp_path_factory, "sixteen", train=16, val=2, test=2)


@pytest.fixture(scope="module")
def uninterrupted(sixteen_images, tmp_path_factory):
    work = tmp_path_factory.mktemp("uninterrupted")
    train_cli(sixteen_images, work, None, RESUMED)
    return work


def stop_during(data, work, line: str, signum: int, *flags) -> subprocess.CompletedProcess:
    """Start training and send ``signum`` once its log shows ``line``; returns its outcome."""
    command = [sys.executable, "-m", "camvidseg", "train",
               *map(str, train_command(data, work, None, RESUMED, *flags))]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)  # fmt: skip
    output = []
    try:
        for text in process.stdout:
            output.append(text)
            if line in text:
                process.send_signal(signum)
                break
        output += process.stdout.readlines()
    finally:
        returncode = process.wait(timeout=120)
    return subprocess.CompletedProcess(command, returncode, "".join(output), "")


def assert_same_result(work, reference) -> list[dict]:
    """The same weights and history as the reference run; returns the attempts (of each run of
    the job) whose times the history also records."""
    assert state_dicts_equal(work / "best.pth", reference / "best.pth")  # tensor by tensor
    history = json.loads((work / "history.json").read_text())
    attempts = history.pop("attempts")
    reference_history = json.loads((reference / "history.json").read_text())
    assert len(reference_history.pop("attempts")) == 1
    assert history == reference_history
    assert [r["epoch"] for r in history["val"]] == [1, 2, 3] and len(history["train"]) == 24
    return attempts


def assert_two_attempts(attempts, resumed_at: int):
    """A stopped training and its resume: both timed, the second from its checkpoint on."""
    assert len(attempts) == 2 and all(a["seconds"] > 0 for a in attempts), attempts
    assert attempts[0]["first_iter"] == 0 and attempts[0]["last_iter"] >= 1
    assert attempts[1]["first_iter"] == resumed_at and attempts[1]["last_iter"] == 24


def test_killed_mid_epoch_resumes_exactly(sixteen_images, uninterrupted, tmp_path):
    stopped = stop_during(sixteen_images, tmp_path, "Epoch(train) [2][2/8]", signal.SIGKILL)
    assert stopped.returncode == -signal.SIGKILL
    result = train_cli(sixteen_images, tmp_path, None, RESUMED)
    assert "resuming from epoch_1.pth" in result.stdout
    assert "Epoch(train) [1]" not in result.stdout  # epoch 1 was not trained again
    assert_two_attempts(assert_same_result(tmp_path, uninterrupted), resumed_at=8)
    metrics = []
    for work in (tmp_path, uninterrupted):  # the evaluate stage scores both models alike
        out = work / "val.json"
        run_cli("evaluate", "--model", work / "best.pth",
                "--prepared", sixteen_images / "results/data/prepared",
                "--palette", sixteen_images / "results/data/palette.json", "--split", "val",
                "--device", "cpu", "--out-json", out, "--out-csv", work / "val.csv")  # fmt: skip
        metrics.append(json.loads(out.read_text()))
    assert metrics[0] == metrics[1] and metrics[0]["precision"] == "fp32"


def test_signal_saves_the_current_iteration_and_resumes_exactly(
    sixteen_images, uninterrupted, tmp_path
):
    """SIGUSR1 (a scheduler's notice) mid-epoch: checkpoint at that iteration, exit non-zero; the
    rerun (here with two loader workers) continues from that iteration to the same model."""
    stopped = stop_during(sixteen_images, tmp_path, "Epoch(train) [2][2/8]", signal.SIGUSR1)
    assert stopped.returncode == 128 + signal.SIGUSR1
    # The signal lands in iteration 10 or, once its log line is out, in one of the next.
    pattern = r"stopped by SIGUSR1 after iteration (\d+): saved (iter_\d+\.pth)"
    found = re.search(pattern, stopped.stdout)
    assert found and 10 <= int(found[1]) < 16 and found[2] == f"iter_{found[1]}.pth"
    work_dir = next((tmp_path / "ckpt").iterdir())
    assert (work_dir / found[2]).is_file()
    result = train_cli(sixteen_images, tmp_path, None, RESUMED, "--num-workers", "2")
    assert f"resuming from {found[2]}" in result.stdout
    trained = [line for line in result.stdout.splitlines() if "Epoch(train)" in line]
    assert f"Epoch(train) [2][{int(found[1]) - 8 + 1}/8]" in trained[0]  # the next untrained one
    assert not list(work_dir.glob("iter_*.pth"))  # superseded by the epoch checkpoints
    attempts = assert_same_result(tmp_path, uninterrupted)
    assert_two_attempts(attempts, resumed_at=int(found[1]))
    assert attempts[0]["last_iter"] == int(found[1])  # written as the signal stopped it


def test_work_dir_config_dump_is_the_config_that_ran(uninterrupted):
    from mmengine.config import Config

    work_dir = next((uninterrupted / "ckpt").iterdir())
    dump = next(work_dir.glob("*.py"))
    assert "None" not in dump.read_text()  # unset entries left out, not written as None
    ran = Config.fromfile(dump)
    assert ran.train_cfg.max_epochs == RESUMED["epochs"]
    assert ran.train_cfg.type == "camvidseg.training.resume.ResumableEpochLoop"
    assert ran.train_dataloader.batch_size == RESUMED["batch_size"]
    assert ran.optim_wrapper.optimizer.lr == RESUMED["lr"]
    assert ran.work_dir == str(work_dir)


def test_mlflow_tracker_records_each_experiment_as_a_run_with_settings_and_epoch_scores(
    sixteen_images, tmp_path
):
    """train.trackers: [tensorboard, mlflow]: two trainings (two experiments) into one local
    store, read back through the MLflow client as `mlflow ui` would show them."""
    import mlflow

    store = tmp_path / "mlflow"
    for name, lr in (("lr=0.002", 0.002), ("lr=0.004", 0.004)):
        train = RESUMED | {"epochs": 2, "lr": lr, "trackers": ["tensorboard", "mlflow"]}
        train_cli(sixteen_images, tmp_path / name, None, train,
                  "--run-name", name, "--mlflow-store", store)  # fmt: skip
        work_dir = next((tmp_path / name / "ckpt").iterdir())
        assert list((work_dir / "tensorboard").glob("events.out.tfevents.*"))  # still there
    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("camvidseg")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["lr=0.002", "lr=0.004"]
    for name, lr in (("lr=0.002", 0.002), ("lr=0.004", 0.004)):
        run = runs[name]
        assert float(run.data.params["train.lr"]) == lr
        assert run.data.params["model.name"] == "lraspp_mobilenet_v3_large"
        scores = client.get_metric_history(run.info.run_id, "mIoU")
        history = json.loads((tmp_path / name / "history.json").read_text())
        assert [m.step for m in scores] == [1, 2]  # one per epoch
        assert [round(m.value, 6) for m in scores] == [round(v["mIoU"], 6) for v in history["val"]]
        assert client.get_metric_history(run.info.run_id, "loss")


def test_unreadable_checkpoint_is_skipped(sixteen_images, uninterrupted, tmp_path):
    shutil.copytree(uninterrupted / "ckpt", tmp_path / "ckpt")
    work_dir = next((tmp_path / "ckpt").iterdir())
    newest = work_dir / "epoch_3.pth"
    newest.write_bytes(newest.read_bytes()[:5000])  # as a kill during an in-place write leaves it
    result = train_cli(sixteen_images, tmp_path, None, RESUMED)
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "epoch_3.pth: unreadable checkpoint skipped" in warnings[0]
    assert "resuming from epoch_2.pth" in result.stdout
    assert "Epoch(train) [3][8/8]" in result.stdout  # epoch 3 trained again
    assert_same_result(tmp_path, uninterrupted)


def test_stop_between_a_checkpoint_and_its_validation_validates_that_epoch_first(
    sixteen_images, uninterrupted, tmp_path
):
    """epoch_2.pth is written before epoch 2's validation: a run stopped in between (its log has
    no epoch 2 score yet) validates epoch 2 on resuming, then trains epoch 3."""
    shutil.copytree(uninterrupted / "ckpt", tmp_path / "ckpt")
    work_dir = next((tmp_path / "ckpt").iterdir())
    for path in work_dir.iterdir():  # keep epoch 2's checkpoint and the best one so far
        if path.is_dir():
            shutil.rmtree(path)  # the logs of the first run
        elif path.name != "epoch_2.pth" and not path.name.startswith("best_"):
            path.unlink()
    result = train_cli(sixteen_images, tmp_path, None, RESUMED)
    assert "resuming from epoch_2.pth" in result.stdout
    assert "Epoch(train) [2]" not in result.stdout
    history = json.loads((tmp_path / "history.json").read_text())
    reference = json.loads((uninterrupted / "history.json").read_text())
    assert history["val"] == reference["val"][1:]  # epochs 2 and 3, as scored without a stop
    assert state_dicts_equal(tmp_path / "best.pth", uninterrupted / "best.pth")


def test_checkpoint_choice_by_iteration(tmp_path):
    from camvidseg.training.resume import checkpoints, newest_readable_checkpoint

    names = ["epoch_2.pth", "epoch_9.pth", "epoch_10.pth", "iter_25.pth", "best_mIoU_epoch_10.pth"]
    for name in names:
        torch.save({"meta": {}}, tmp_path / name)
    order = [path.name for _, path in checkpoints(tmp_path, iters_per_epoch=3)]
    assert order == ["epoch_2.pth", "iter_25.pth", "epoch_9.pth", "epoch_10.pth"]
    assert newest_readable_checkpoint(tmp_path, 3).name == "epoch_10.pth"
    (tmp_path / "epoch_10.pth").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "epoch_9.pth").write_bytes((tmp_path / "epoch_9.pth").read_bytes()[:-30])
    assert newest_readable_checkpoint(tmp_path, 3).name == "iter_25.pth"


def test_history_merges_runs_later_winning(tmp_path):
    """A killed run's scalars (its last line cut off mid-write) and the resumed run's."""
    from camvidseg.training.train import merge_history

    first = ['{"loss": 3.0, "lr": 0.1, "epoch": 1, "step": 1}', '{"mIoU": 0.1, "step": 1}',
             '{"loss": 2.9, "lr": 0.1, "epoch": 2, "step": 2}', '{"loss": 2.']  # fmt: skip
    second = ['{"loss": 2.5, "lr": 0.1, "epoch": 2, "step": 2}', '{"mIoU": 0.2, "step": 2}']
    for name, lines in (("20260101_000000", first), ("20260101_000500", second)):
        (tmp_path / name / "vis_data").mkdir(parents=True)
        (tmp_path / name / "vis_data/scalars.json").write_text("\n".join(lines))
    history = merge_history(tmp_path)
    assert [(r["iter"], r["loss"]) for r in history["train"]] == [(1, 3.0), (2, 2.5)]
    assert history["val"] == [{"epoch": 1, "mIoU": 0.1}, {"epoch": 2, "mIoU": 0.2}]


def test_checkpoints_are_written_atomically(tiny_run, tmp_path):
    """Every write into the work dir opens a temporary name; the final names only appear by
    rename (an audit hook sees every ``open`` of this process). MMEngine's ``last_checkpoint``
    pointer is not among them: nothing reads it."""
    from camvidseg.training.train import parse_args, train

    opened = []
    work_root = str(tmp_path / "ckpt")

    def audit(event, args):
        if event == "open" and str(args[0]).startswith(work_root) and "w" in str(args[1] or ""):
            opened.append(os.path.basename(args[0]))

    sys.addaudithook(audit)  # stays for the session: it only records paths under tmp_path
    train(parse_args(list(map(str, train_command(tiny_run, tmp_path, None, {"epochs": 2})))))
    work_dir = next((tmp_path / "ckpt").iterdir())
    finals = {p.name for p in work_dir.iterdir() if p.suffix == ".pth"}
    assert {"epoch_1.pth", "epoch_2.pth"} <= finals
    assert any(name.startswith(".epoch_2.pth.") for name in opened)
    assert not finals & set(opened), opened


# ---------------------------------------------------------------- TensorBoard (12)


def test_tensorboard_events_hold_the_scalars(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tiny_run / "results/train_work").glob("*/tensorboard"))))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "mIoU", "mAcc", "aAcc"} <= tags
    history = json.loads((tiny_run / "results/model/history.json").read_text())
    logged = {e.step: e.value for e in events.Scalars("mIoU")}
    assert logged == pytest.approx({r["epoch"]: r["mIoU"] for r in history["val"]})
    assert [e.step for e in events.Scalars("loss")] == [r["iter"] for r in history["train"]]


# ---------------------------------------------------------------- the workflow, DDP


@pytest.mark.slow
def test_killed_training_resumes_from_last_epoch(tmp_path):
    config = REPO / "tests/resume.yaml"
    first, moved = tmp_path / "first", tmp_path / "moved"
    scores = "results/metrics/val.json"  # train and what reads the model; no export, pictures
    command, env = snakemake_call(first, scores, configfile=config)
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
            ["pgrep", "-s", str(run.pid), "-f", r"^\S*python\S* -m camvidseg train"],
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
    # An epoch is ~0.6 s here: epoch 2 may have ended between the check and the kill.
    saved = [int(p.stem.split("_")[1]) for p in first.glob("results/train_work/*/epoch_*.pth")]
    last = max(saved)
    assert last in (1, 2)

    shutil.move(first, moved)  # checkpoints are found by name: the project may move
    snakemake(moved, scores, configfile=config)
    log = (moved / "results/logs/train.log").read_text()
    assert f"resuming from epoch_{last}.pth" in log
    assert "Epoch(train) [1]" not in log  # the saved epochs were not trained again
    assert f"Epoch(train) [{last}]" not in log
    history = json.loads((moved / "results/model/history.json").read_text())
    assert [r["epoch"] for r in history["val"]] == [1, 2, 3]
    losses = [r["loss"] for r in history["train"]]
    assert sum(losses[-5:]) < sum(losses[:5])  # it learns
    assert json.loads((moved / "results/metrics/val.json").read_text())["mIoU"] > 0


SYNC_BUFFERS = """
import os, sys, types
import torch, torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
rank = int(sys.argv[1])
dist.init_process_group("gloo", rank=rank, world_size=2)
from mmengine.hooks import SyncBuffersHook
bn = torch.nn.BatchNorm2d(2)
bn.running_mean.fill_(2.0 * rank)
bn.num_batches_tracked.fill_(7)
SyncBuffersHook().after_train_epoch(types.SimpleNamespace(model=bn))
print(bn.running_mean.tolist(), bn.num_batches_tracked.item(), bn.num_batches_tracked.dtype)
"""


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch built without gloo")
def test_sync_buffers_hook_averages_statistics_and_keeps_the_counters():
    """Why training uses MMEngine's SyncBuffersHook: under DDP it leaves every rank the mean
    BatchNorm statistics and the batch counter (equal on every rank) unchanged, as an integer."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    ranks = [subprocess.Popen([sys.executable, "-c", SYNC_BUFFERS, str(rank), port],
                              stdout=subprocess.PIPE, text=True) for rank in (0, 1)]  # fmt: skip
    outputs = [rank.communicate(timeout=300)[0].strip() for rank in ranks]
    assert outputs == ["[1.0, 1.0] 7 torch.int64"] * 2


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch built without gloo")
def test_two_process_gloo_ddp_matches_single_process(tiny_run, tmp_path):
    runs = {}
    learns = {"epochs": 12, "lr": 0.01, "val_interval": 12}  # 36 steps: beats a constant guess
    for name, extra in (("single", {"batch_size": 2}), ("ddp", {"batch_size": 1})):
        flags = ["--threads", "2"] + (["--gpus", "2"] if name == "ddp" else [])
        result = train_cli(tiny_run, tmp_path / name, None, learns | extra, *flags)
        runs[name] = json.loads((tmp_path / name / "history.json").read_text())
        if name == "ddp":
            assert "--nproc_per_node=2" in result.stdout
    single, ddp = runs["single"]["val"][-1], runs["ddp"]["val"][-1]
    val = json.loads((tiny_run / "results/metrics/val.json").read_text())
    confusion = np.array(val["confusion"])
    constant_guess = confusion.sum(axis=1).max() / confusion.sum()  # the most frequent class
    assert min(single["aAcc"], ddp["aAcc"]) > constant_guess + 0.05, (single, ddp, constant_guess)
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
