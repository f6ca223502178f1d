"""The workflow through profiles/slurm on a real single-node SLURM cluster started by the test."""

import filecmp
import json
import re
import shutil

import pytest
import yaml
from conftest import REPO, TINY, snakemake
from slurm import cluster as slurm_cluster

PROFILE = REPO / "tests/slurm/profile"


@pytest.fixture(scope="module")
def cluster():
    why_not = slurm_cluster.install()
    if why_not:
        pytest.skip(why_not)
    running = slurm_cluster.Cluster(gpus=2).start()
    yield running
    processes = list(running.processes)
    running.stop()
    assert all(p.poll() is not None for p in processes), "a SLURM daemon was left running"


def slurm_job_ids(workdir, rule):
    logs = list((workdir / ".snakemake/slurm_logs").glob(f"rule_{rule}/**/*.log"))
    return {re.search(r"(\d+)\.log$", p.name).group(1) for p in logs}


def test_profile_matches_the_real_one():
    real = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    test = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert real["executor"] == test["executor"] == "slurm"
    assert set(test["set-resources"]["train"]) <= set(real["set-resources"]["train"])


def test_workflow_runs_through_slurm_like_locally(cluster, tiny_run, tmp_path):
    result = snakemake(tmp_path, "--profile", PROFILE, timeout=400)
    assert "Nothing to be done" not in result.stdout

    jobs = {job_id: state for job_id, _, state in cluster.jobs()}
    for rule in ("extract", "palette", "convert_masks", "train", "evaluate", "visualize"):
        ids = slurm_job_ids(tmp_path, rule)
        assert ids, f"rule {rule} left no SLURM log"
        assert all(jobs.get(i) == "COMPLETED" for i in ids), (rule, ids, jobs)
    assert not slurm_job_ids(tmp_path, "obtain_dataset")  # a localrule: the login node's job
    train_id = slurm_job_ids(tmp_path, "train").pop()
    record = cluster.run("scontrol", "show", "job", train_id).stdout
    assert "gpu" in record and "gpu:1" in record.replace("gres/", "").replace("gres:", "")

    # Same data stages byte for byte, same scores within thread-count noise.
    for path in ("results/data/palette.json", "results/data/prepared/index.json"):
        assert filecmp.cmp(tmp_path / path, tiny_run / path, shallow=False), path
    ours = json.loads((tmp_path / "results/metrics/val.json").read_text())
    local = json.loads((tiny_run / "results/metrics/val.json").read_text())
    assert ours["mIoU"] == pytest.approx(local["mIoU"], abs=0.05)
    assert sorted(p.name for p in (tmp_path / "results/vis_data").iterdir()) == sorted(
        p.name for p in (tiny_run / "results/vis_data").iterdir()
    )


def test_two_gpu_training_job_runs_ddp_inside_one_slurm_job(cluster, tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run", symlinks=True)
    # --set-resources replaces the profile's whole entry for the rule: restate the test limits.
    two_gpus = ["train:gpu=2", "train:cpus_per_gpu=1", "train:runtime=10", "train:mem_mb=1000"]
    snakemake(
        tmp_path / "run",
        "--profile",
        PROFILE,
        "--set-resources",
        *two_gpus,
        "--forcerun",
        "train",
        "--until",
        "train",
        timeout=300,
    )
    ids = slurm_job_ids(tmp_path / "run", "train")
    assert len(ids) == 1  # one SLURM job ...
    record = cluster.run("scontrol", "show", "job", ids.pop()).stdout
    assert "gpu:2" in record.replace("gres/", "").replace("gres:", "")
    log = (tmp_path / "run/results/logs/train.log").read_text()
    assert "--nproc_per_node=2" in log  # ... running two DDP processes (gloo on this CPU)
    assert (tmp_path / "run/results/model/best.pth").is_file()


def test_failing_rule_is_a_failed_slurm_job(cluster, tmp_path):
    broken = tmp_path / "CamVid.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08 this is not an archive")
    config = yaml.safe_load(TINY.read_text())
    config["dataset"] = {"source": "local", "path": str(broken)}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(
        tmp_path,
        "--profile",
        PROFILE,
        configfile=tmp_path / "broken.yaml",
        check=False,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", output), output[-3000:]
    assert "archive is truncated or corrupt" in (tmp_path / "results/logs/extract.log").read_text()
