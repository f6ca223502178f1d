"""The distributed launcher's refusals (its real runs are in test_train.py and test_slurm.py)."""

import os

from conftest import run_cli

from camvidseg.training import launch

TRAIN_ARGS = ["--settings", '{"train": {"device": "cpu"}}', "--prepared", "x", "--palette", "x",
              "--out-model", "m", "--out-history", "h"]  # fmt: skip


def test_several_nodes_outside_slurm_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = run_cli(
        "train", *TRAIN_ARGS, "--work-root", tmp_path, "--nodes", "2", check=False, env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: train.nodes: 2 needs a SLURM job of 2 nodes"
        " (run the workflow with --profile profiles/slurm)"
    )


def test_node_rendezvous_is_hosted_by_the_first_task(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setattr(launch, "first_node_address", lambda: "10.0.0.5")
    commands = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("SLURM_PROCID", rank)
        commands[rank] = launch.torchrun_command("camvidseg.training.train", ["--x"], 4, 2)
    port = 29400 + 1234 % 1000
    for rank, command in commands.items():
        assert command[command.index("-m", 3) :] == ["-m", "camvidseg.training.train", "--x"]
        assert {"--nproc_per_node=4", "--nnodes=2", "--rdzv-backend=c10d"} <= set(command)
        assert f"--rdzv-endpoint=10.0.0.5:{port}" in command
        assert f"--rdzv-conf=is_host={int(rank == '0')}" in command
