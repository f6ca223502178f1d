"""Benchmark: the tiny workflow through SLURM, one cluster job per rule vs grouped jobs.

Starts the tests' real SLURM cluster (tests/slurm/cluster.py: munge, slurmctld, two slurmd on this
machine; root and apt-get needed the first time) and runs the tiny workflow (tests/tiny.yaml)
from nothing through tests/slurm/profile, alternating, in one run:
  local:    no SLURM at all (`--cores 2`): the stages' own work, the floor of the other two;
  per rule: as before grouping: the profile without `groups:`/`group-components:` and a copy of
            the workflow whose data chain (extract, palette, convert_masks) and summaries (plots,
            run_cost, model_card) are not localrules, so every rule but the downloads and
            provenance is its own SLURM job (12);
  grouped:  the workflow and profile as they are (the data chain and the summaries run where
            Snakemake runs; training, then two groups side by side: 3 jobs).
Reports wall time and the number of SLURM jobs of each run, the grouped/per-rule ratio of the
medians (target <= 0.5) and the same ratio for the time SLURM adds to the local run. The machine's
other load moves all alike: compare within one run.

Snakemake learns that a job ended only at the plugin's next status check: the first comes
`slurm-init-seconds-before-status-checks` after a job ended (tests/slurm/profile: 4 s, so the
tests are quick; the plugin's default, which profiles/slurm keeps: 40 s), and while nothing ends
the interval grows by 10 s. `--first-status-check 40` measures both runs as profiles/slurm would.
Usage: python benchmarks/slurm_jobs.py [--rounds 2] [--first-status-check SECONDS]
       (writes the figures for that setting into benchmarks/results/slurm_jobs.json)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from slurm import cluster as slurm_cluster  # noqa: E402

TEST_PROFILE = yaml.safe_load((REPO / "tests/slurm/profile/config.yaml").read_text())
GROUPING = ("groups", "group-components")
# localrules since the grouping: the data chain and the summaries
MADE_LOCAL = ("extract", "index_dataset", "palette", "convert_masks", "plots", "run_cost",
              "model_card")  # fmt: skip
FIRST_CHECK = "slurm-init-seconds-before-status-checks"


def cluster_profile(folder: Path, grouped: bool, first_check: int) -> Path:
    """tests/slurm/profile, without its grouping unless ``grouped`` (then every rule is its own
    SLURM job), with the first status check after ``first_check`` seconds."""
    settings = {key: value for key, value in TEST_PROFILE.items()
                if grouped or key not in GROUPING}  # fmt: skip
    settings[FIRST_CHECK] = first_check
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    return folder


def per_rule_workflow(folder: Path) -> Path:
    """A copy of the workflow whose MADE_LOCAL rules lose ``localrule: True`` (the package is
    shared)."""
    folder.mkdir()
    for part in ("workflow", "config", "envs"):
        shutil.copytree(REPO / part, folder / part)
    (folder / "src").symlink_to(REPO / "src")
    made_remote = []
    for rules in (folder / "workflow/rules").glob("*.smk"):
        blocks = re.split(r"(?m)^(?= *rule \w+:$)", rules.read_text())  # text before, each rule
        for i, block in enumerate(blocks):
            name = re.match(r" *rule (\w+):", block)
            if name and name[1] in MADE_LOCAL and "localrule: True\n" in block:
                blocks[i] = re.sub(r" *localrule: True\n", "", block)
                made_remote.append(name[1])
        rules.write_text("".join(blocks))
    if sorted(made_remote) != sorted(MADE_LOCAL):  # the rule files changed: say so, not 9 jobs
        raise SystemExit(f"error: localrules found for {made_remote}, expected {MADE_LOCAL}")
    return folder / "workflow/Snakefile"


def run_workflow(cluster, profile: Path | None, workdir: Path, snakefile: Path) -> dict:
    before = {job for job, _, _ in cluster.jobs()}
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir),
               "--configfile", str(REPO / "tests/tiny.yaml"), "--cores", "2"]  # fmt: skip
    if profile is not None:
        command += ["--profile", str(profile)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    load = os.getloadavg()[0]  # the other work on the machine, for reading the figures
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env, timeout=1200)
    seconds = time.perf_counter() - start
    jobs = [(job, state) for job, _, state in cluster.jobs() if job not in before]
    assert all(state == "COMPLETED" for _, state in jobs), jobs
    return {"seconds": round(seconds, 1), "slurm_jobs": len(jobs), "load_before": round(load, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each, alternating")
    parser.add_argument(
        "--first-status-check",
        type=int,
        metavar="SECONDS",
        help=f"{FIRST_CHECK} for both SLURM runs (default: the test profile's)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/slurm_jobs.json")
    args = parser.parse_args()
    why_not = slurm_cluster.install()
    if why_not:
        raise SystemExit(f"error: {why_not}")
    scratch = Path(tempfile.mkdtemp(prefix="slurm-bench-"))
    first_check = args.first_status_check or TEST_PROFILE[FIRST_CHECK]
    profiles = {
        "local": None,
        "per_rule": cluster_profile(scratch / "per_rule_profile", False, first_check),
        "grouped": cluster_profile(scratch / "grouped_profile", True, first_check),
    }
    snakefiles = {"local": REPO / "workflow/Snakefile",
                  "per_rule": per_rule_workflow(scratch / "per_rule"),
                  "grouped": REPO / "workflow/Snakefile"}  # fmt: skip
    runs: dict[str, list[dict]] = {name: [] for name in profiles}
    cluster = slurm_cluster.Cluster(gpus=2, nodes=2).start()  # as tests/test_slurm.py
    try:
        for round_ in range(args.rounds):
            for name, profile in profiles.items():
                workdir = scratch / f"{name}{round_}"
                result = run_workflow(cluster, profile, workdir, snakefiles[name])
                print(name, result, flush=True)
                runs[name].append(result)
    finally:
        cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    medians = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    added = {name: round(medians[name] - medians["local"], 1) for name in ("per_rule", "grouped")}
    report = {
        "what": "tests/tiny.yaml through tests/slurm/profile on the tests' SLURM cluster",
        FIRST_CHECK: first_check,
        "cpus": os.cpu_count(),
        "runs": runs,
        "median_seconds": medians,
        "grouped_over_per_rule": round(medians["grouped"] / medians["per_rule"], 3),
        "slurm_seconds_added": added,
        "grouped_over_per_rule_added": round(added["grouped"] / added["per_rule"], 3),
    }
    reports = json.loads(args.out.read_text()) if args.out.exists() else {}
    reports[f"first_status_check_{first_check}s"] = report  # one entry per setting
    args.out.write_text(json.dumps(reports, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
