"""The workflow through profiles/slurm on a real SLURM cluster of two slurmd nodes started here."""

import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import time
from datetime import datetime

import pytest
import torch
import yaml
from conftest import REPO, TINY, snakemake, snakemake_call
from slurm import cluster as slurm_cluster

PROFILE = REPO / "tests/slurm/profile"
# Settings the test profile must share with the real one (it differs in partition, time, memory).
SHARED = ("executor", "local-cores", "groups", "group-components", "resources",
          "set-resource-scopes", "preemptible-rules", "preemptible-retries",
          "slurm-requeue")  # fmt: skip
EXPERIMENTS = {"lr_low": 0.001, "lr_high": 0.003}  # two trainings of the tiny set


@pytest.fixture(scope="module")
def cluster():
    why_not = slurm_cluster.install()
    if why_not:
        pytest.skip(why_not)
    running = slurm_cluster.Cluster(gpus=2, nodes=2).start()
    yield running
    processes = list(running.processes)
    running.stop()
    assert all(p.poll() is not None for p in processes), "a SLURM daemon was left running"


def slurm_job_ids(workdir, rule_or_group):
    logs = (workdir / ".snakemake/slurm_logs").glob(f"{rule_or_group}/**/*.log")
    return {re.search(r"(\d+)\.log$", p.name).group(1) for p in logs}


def run_counting_jobs(cluster, workdir, *args, **kwargs):
    """Snakemake in ``workdir``; returns its result and {job id: state} of the SLURM jobs it
    submitted (slurmctld remembers finished jobs for MinJobAge)."""
    before = {job_id for job_id, _, _ in cluster.jobs()}
    result = snakemake(workdir, *args, **kwargs)
    return result, {i: state for i, _, state in cluster.jobs() if i not in before}


def test_profile_matches_the_real_one():
    real = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    test = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert real["executor"] == "slurm"
    assert {k: real[k] for k in SHARED} == {k: test[k] for k in SHARED}
    for rule, resources in test["set-resources"].items():
        assert set(resources) <= set(real["set-resources"][rule]), rule
    assert (
        test["set-resources"]["train"]["slurm_extra"]
        == real["set-resources"]["train"]["slurm_extra"]
    )
    for rule, resources in real["set-resources"].items():  # no GPU request hides in slurm_extra
        assert not re.search(r"--(gpus|gres)", resources.get("slurm_extra", "")), rule


def test_every_gpu_rule_goes_to_the_gpu_partition():
    real = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())["set-resources"]
    gpu_partition = real["train"]["slurm_partition"]
    rules = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    asking = {
        name
        for name, body in re.findall(r"rule (\w+):\n(.*?)(?=\n\s*rule \w+:|\Z)", rules, re.S)
        if re.search(r"\bgpu=\w*gpu_request,", body)  # the config's device asks for GPUs
    }
    assert {"train", "evaluate", "visualize", "predict"} <= asking
    for rule in asking:
        assert real[rule]["slurm_partition"] == gpu_partition, rule


def test_workflow_runs_through_slurm_like_locally(cluster, tiny_run, tmp_path):
    # The GPU stages ask for a GPU as on a GPU cluster (the CPU stages ignore it). A profile, not
    # --set-resources: that would replace the profile's whole set-resources.
    settings = yaml.safe_load((PROFILE / "config.yaml").read_text())
    for rule in ("evaluate", "visualize"):
        settings["set-resources"][rule] |= {"gpu": 1, "gpu_slot": 1}  # as device: cuda gives
    settings["set-threads"]["train"] = 2  # as the local run (--cores 2): the same arithmetic
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile/config.yaml").write_text(yaml.safe_dump(settings))
    run = tmp_path / "run"
    result, jobs = run_counting_jobs(cluster, run, "--profile", tmp_path / "profile", timeout=600)
    assert "Nothing to be done" not in result.stdout

    # Three cluster jobs instead of one per rule (12): training, the scoring and pictures
    # together, the ONNX export and its check together.
    assert sorted(jobs.values()) == ["COMPLETED"] * 3, jobs
    for job in ("rule_train", "group_post_training*", "group_export*"):
        assert len(slurm_job_ids(run, job)) == 1, job
    local = ("obtain_dataset", "extract", "palette", "convert_masks", "plots", "run_cost",
             "model_card")  # fmt: skip
    for rule in local:  # localrules: the login node's (Snakemake's) own jobs
        assert not slurm_job_ids(run, f"rule_{rule}"), rule
    assert (run / "results/model/MODEL_CARD.md").is_file()
    # Three GPU stages in one job that holds one GPU: they ran one after another on it.
    (post,) = slurm_job_ids(run, "group_post_training*")
    record = cluster.run("scontrol", "show", "job", post).stdout
    assert "gpu:1" in record.replace("gres/", "").replace("gres:", ""), record

    # Same data stages byte for byte, the same model and scores, the same pictures.
    for path in ("results/data/palette.json", "results/data/prepared/index.json"):
        assert filecmp.cmp(run / path, tiny_run / path, shallow=False), path
    ours, local = (torch.load(r / "results/model/best.pth", weights_only=True)["state_dict"]
                   for r in (run, tiny_run))  # fmt: skip
    assert ours.keys() == local.keys()
    assert all(torch.equal(ours[k], local[k]) for k in ours)
    for split in ("val", "test"):
        ours, local = (json.loads((r / f"results/metrics/{split}.json").read_text())
                       for r in (run, tiny_run))  # fmt: skip
        assert ours == local, split
    for folder in ("results/vis_data", "results/plots"):
        assert sorted(p.name for p in (run / folder).iterdir()) == sorted(
            p.name for p in (tiny_run / folder).iterdir()
        ), folder


def run_interval(cluster, job_id) -> tuple[datetime, datetime]:
    """When a finished job started and ended, as slurmctld remembers it (MinJobAge)."""
    record = cluster.run("scontrol", "show", "job", job_id).stdout
    start, end = (re.search(rf"\b{key}=(\S+)", record).group(1) for key in ("StartTime", "EndTime"))
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


def test_two_experiments_train_side_by_side_each_ddp_in_one_slurm_job(
    cluster, tiny_run_copy, tmp_path
):
    """Two experiments (issue 12): each training is its own SLURM job, and they run at the same
    time (one per node here); each job asks for 2 GPUs and runs two DDP processes in it."""
    run = tiny_run_copy  # data stages done: only the trainings run
    config = yaml.safe_load(TINY.read_text())
    config["experiments"] = {name: {"train": {"lr": lr}} for name, lr in EXPERIMENTS.items()}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # --set-resources replaces the profile's whole set-resources: restate the test limits.
    two_gpus = ["train:gpu=2", "train:cpus_per_gpu=1", "train:runtime=10", "train:mem_mb=1000"]
    _, jobs = run_counting_jobs(cluster, run, "--profile", PROFILE, "--set-resources",
                                *two_gpus, "--until", "train",
                                configfile=tmp_path / "two.yaml", timeout=300)  # fmt: skip
    ids = slurm_job_ids(run, "rule_train")
    assert len(ids) == 2 and set(jobs) == ids, (ids, jobs)  # one SLURM job per experiment ...
    assert sorted(jobs.values()) == ["COMPLETED"] * 2, jobs
    (start_a, end_a), (start_b, end_b) = (run_interval(cluster, i) for i in sorted(ids))
    assert start_a < end_b and start_b < end_a, (start_a, end_a, start_b, end_b)  # ... together
    for job in ids:
        record = cluster.run("scontrol", "show", "job", job).stdout
        assert "gpu:2" in record.replace("gres/", "").replace("gres:", ""), record
    for name in EXPERIMENTS:
        folder = run / "results/experiments" / name
        # each job runs two DDP processes (gloo on this CPU)
        assert "--nproc_per_node=2" in (folder / "logs/train.log").read_text(), name
        assert (folder / "model/best.pth").is_file(), name
    assert not (run / ".dist_test").exists()  # DDP validation gathers in the work dir


def test_two_node_training_runs_one_torchrun_per_node(cluster, tiny_run, tiny_run_copy, tmp_path):
    run = tiny_run_copy
    config = yaml.safe_load(TINY.read_text())
    config["train"] |= {"nodes": 2, "batch_size": 1}  # 2 processes x 1 = the local run's batch
    (tmp_path / "two_nodes.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # One fake GPU on each node: the job asks for 2 in all (--gpus=2) on --nodes=2.
    gpus = ["train:gpu=2", "train:cpus_per_gpu=1", "train:runtime=10", "train:mem_mb=1000"]
    snakemake(run, "--profile", PROFILE, "--set-resources", *gpus, "--forcerun", "train",
              "--until", "train", configfile=tmp_path / "two_nodes.yaml", timeout=300)  # fmt: skip

    (job,) = slurm_job_ids(run, "rule_train")  # one SLURM job ...
    record = cluster.run("scontrol", "show", "job", job).stdout
    assert "NumNodes=2 " in record and "NodeList=node[1-2]" in record, record
    assert "gpu:2" in record.replace("gres/", "").replace("gres:", "")
    log = (run / "results/logs/train.log").read_text()
    # ... on two slurmd nodes, each task its own torchrun agent of a 2-node rendezvous.
    assert "node 0 of 2 on node1" in log and "node 1 of 2 on node2" in log, log[-3000:]
    assert log.count("--nnodes=2") == 2 and "--nproc_per_node=1" in log
    ours, local = (json.loads((r / "results/model/history.json").read_text())
                   for r in (run, tiny_run))  # fmt: skip
    assert abs(ours["val"][-1]["mIoU"] - local["val"][-1]["mIoU"]) < 0.15  # the DDP test's
    # The nodes split every global batch (DistributedSampler over both): as many iterations, at
    # the same learning rates, as the one-process run; two unjoined runs would make twice as many.
    assert [(r["iter"], r["epoch"], r["lr"]) for r in ours["train"]] == [
        (r["iter"], r["epoch"], pytest.approx(r["lr"])) for r in local["train"]
    ]
    assert not (run / ".dist_test").exists()
    assert not list((run / "results/train_work").glob("*/.dist_test/*"))


def test_failing_rule_is_a_failed_slurm_job(cluster, tmp_path):
    broken = tmp_path / "backbone.pth"
    broken.write_bytes(b"this is not a weights file")
    config = yaml.safe_load(TINY.read_text())
    config["model"]["backbone_weights"] = str(broken)
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # The profile retries a failed training (preemptible-retries); once is enough to see it fail.
    result, jobs = run_counting_jobs(cluster, tmp_path, "--profile", PROFILE,
                                     "--preemptible-retries", "0",
                                     configfile=tmp_path / "broken.yaml", check=False)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert list(jobs.values()) == ["FAILED"], jobs  # and nothing after it was submitted
    assert "Error in rule train" in output, output[-3000:]
    assert "not a PyTorch weights file" in (tmp_path / "results/logs/train.log").read_text()


def wait_for(predicate, what: str, process, timeout: float = 400):
    deadline = time.time() + timeout
    while not (found := predicate()):
        assert process.poll() is None, f"Snakemake ended before {what}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.1)
    return found


def test_signal_mid_epoch_is_saved_and_the_retry_resumes_exactly(cluster, tmp_path):
    """SIGUSR1 to the training job's steps mid-epoch, as `--signal=USR1@120` sends it before the
    time limit: the trainer saves that iteration and exits, Snakemake submits the job again
    (preemptible-retries) and it resumes there; the model equals an uninterrupted run's."""
    config = yaml.safe_load(TINY.read_text())
    config["dataset"]["sample"]["train"] = 40  # 20 iterations an epoch: room to land inside one
    # Iterations of ~0.1 s, not the tiny set's ~0.02 s: the signal, sent within ~0.2 s of the log
    # showing iteration 3-15, lands a few iterations later, never as late as the epoch's end.
    config["dataset"]["sample"] |= {"height": 96, "width": 128}
    config["train"]["crop_size"] = [80, 120]
    configfile = tmp_path / "longer.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    run, log = tmp_path / "slurm", tmp_path / "slurm/results/logs/train.log"
    command, env = snakemake_call(run, "--profile", PROFILE, "--until", "train",
                                  configfile=configfile)  # fmt: skip
    before = {job_id for job_id, _, _ in cluster.jobs()}
    snake = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        iteration = re.compile(r"Epoch\(train\)\s*\[1\]\[\s*([3-9]|1[0-5])/20\]")
        wait_for(lambda: log.is_file() and iteration.search(log.read_text()), "iteration 3", snake)
        (first,) = slurm_job_ids(run, "rule_train")
        assert cluster.run("scancel", "--signal=USR1", first).returncode == 0
        stopped = re.compile(r"stopped by SIGUSR1 after iteration (\d+): saved iter_\1\.pth")
        saved = wait_for(lambda: stopped.search(log.read_text()), "checkpoint on SIGUSR1", snake)
        assert snake.wait(timeout=600) == 0
    finally:
        if snake.poll() is None:
            os.killpg(snake.pid, signal.SIGKILL)
    at = int(saved.group(1))
    assert at % 20, f"iteration {at} ends an epoch: the signal did not land inside one"
    assert f"resuming from iter_{at}.pth" in log.read_text()
    states = {job_id: state for job_id, _, state in cluster.jobs() if job_id not in before}
    assert sorted(states.values()) == ["COMPLETED", "FAILED"], states  # the data chain is local
    assert states[first] == "FAILED"

    # The same training never interrupted, here (same data, same thread count): same model.
    reference = tmp_path / "reference"
    shutil.copytree(run, reference, symlinks=True)
    for made_by_training in ("results/train_work", "results/model"):
        shutil.rmtree(reference / made_by_training)
    snakemake(reference, "--until", "train", "--set-threads", "train=1", configfile=configfile)
    assert "resuming" not in (reference / "results/logs/train.log").read_text()
    ours, theirs = (torch.load(r / "results/model/best.pth", weights_only=True)["state_dict"]
                    for r in (run, reference))  # fmt: skip
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    history = [json.loads((r / "results/model/history.json").read_text()) for r in (run, reference)]
    attempts = [h.pop("attempts") for h in history]
    assert history[0] == history[1]  # the same curve, and ...
    assert [len(a) for a in attempts] == [2, 1]  # ... the stopped job's time counted too
    assert attempts[0][0]["last_iter"] == at and attempts[0][1]["first_iter"] == at
