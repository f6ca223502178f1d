"""GPU leasing on one machine: concurrent local GPU jobs get distinct CUDA_VISIBLE_DEVICES.

Two fake GPUs: a stub ``nvidia-smi`` on PATH that lists device ids 0 and 1 (the only thing the
lease asks the driver). Everything else is real: Snakemake's scheduler with ``--resources
gpu=2``, the lease module, its flock lock files, kill -9.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, TINY, snakemake_call

LEASE = [sys.executable, "-m", "camvidseg", "lease"]


@pytest.fixture
def two_gpus(tmp_path):
    """Environment of a machine with GPUs 0 and 1 and no CUDA_VISIBLE_DEVICES set."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "nvidia-smi"
    stub.write_text('#!/bin/sh\n[ "$1" = "--query-gpu=index" ] && printf "0\\n1\\n"\n')
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(REPO / "src")
    return env


def lease(env, cwd, gpus, command, timeout=30):
    return subprocess.run(
        [*LEASE, "--gpus", str(gpus), "--", *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


SNAKEFILE = """
rule all:
    input: "a.txt", "b.txt", "pair.txt"

rule one_gpu:
    output: "{name}.txt"
    wildcard_constraints: name="a|b"
    resources: gpu=1
    shell:
        "python -m camvidseg lease --gpus 1 -- sh -c"
        " 'echo $CUDA_VISIBLE_DEVICES $(date +%s.%N) > {output}.tmp; sleep 2;"
        " echo $(date +%s.%N) >> {output}.tmp; mv {output}.tmp {output}'"

rule two_gpus:
    input: "a.txt", "b.txt"
    output: "pair.txt"
    resources: gpu=2
    shell: "python -m camvidseg lease --gpus 2 -- sh -c 'echo $CUDA_VISIBLE_DEVICES > {output}'"
"""


def test_concurrent_gpu_jobs_lease_different_devices(two_gpus, tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", "gpu=2"],
        cwd=tmp_path,
        env=two_gpus,
        capture_output=True,
        check=True,
        timeout=120,
    )
    (dev_a, start_a, end_a), (dev_b, start_b, end_b) = (
        (tmp_path / f"{n}.txt").read_text().split() for n in "ab"
    )
    assert float(start_a) < float(end_b) and float(start_b) < float(end_a)  # they overlapped
    assert {dev_a, dev_b} == {"0", "1"}  # ... on different GPUs
    assert (tmp_path / "pair.txt").read_text().split() == ["0,1"]  # gpu: 2 leases two


def test_workflow_gpu_rules_run_through_the_lease(tmp_path):
    """The real rules that ask for GPUs start their stage through the lease, with their count."""
    command, env = snakemake_call(
        tmp_path, "-n", "-p", "--config", "train={device: cuda, gpus: 2}", configfile=TINY
    )
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    for stage, gpus in (("train", 2), ("evaluate", 1), ("visualize", 1)):
        assert f"camvidseg lease --gpus {gpus} -- python -m camvidseg {stage}" in out, stage


def test_lease_is_free_again_after_kill_9(two_gpus, tmp_path):
    holder = subprocess.Popen(
        [*LEASE, "--gpus", "2", "--", "sleep", "60"], env=two_gpus, cwd=tmp_path
    )
    try:
        locks = tmp_path / ".snakemake/gpu-leases"
        deadline = time.time() + 20
        while not all(
            (locks / f"gpu-{i}.lock").is_file() and (locks / f"gpu-{i}.lock").read_text()
            for i in (0, 1)
        ):
            assert time.time() < deadline and holder.poll() is None
            time.sleep(0.05)
        with pytest.raises(subprocess.TimeoutExpired):  # both held: a new job waits
            lease(two_gpus, tmp_path, 1, ["true"], timeout=2)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
    result = lease(two_gpus, tmp_path, 2, ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"])
    assert result.stdout.split() == ["0,1"]  # the kernel dropped the dead job's locks


def test_more_gpus_than_visible_is_one_line(two_gpus, tmp_path):
    result = lease(two_gpus, tmp_path, 3, ["true"])
    assert result.returncode == 2
    assert result.stderr.strip() == "error: 3 GPU(s) asked for, but 2 visible (nvidia-smi)"


def test_user_restriction_and_slurm_assignment_are_respected(two_gpus, tmp_path):
    echo = ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"]
    restricted = {**two_gpus, "CUDA_VISIBLE_DEVICES": "1"}
    assert lease(restricted, tmp_path, 1, echo).stdout.split() == ["1"]
    assert (tmp_path / ".snakemake/gpu-leases/gpu-1.lock").is_file()
    slurm = {**two_gpus, "SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "5"}
    in_job = tmp_path / "job"
    in_job.mkdir()
    assert lease(slurm, in_job, 1, echo).stdout.split() == ["5"]  # SLURM chose: untouched
    assert not (in_job / ".snakemake").exists()
