"""Benchmark: a second ``snakemake`` on the finished demo ("Nothing to be done") stays <= 2 s.

Runs the demo once in a work folder (skipped when it already holds a finished run), then times
no-op re-runs of the whole workflow; the baseline, timed in the same run, is Snakemake's own floor:
a no-op of a one-rule Snakefile whose output exists. Also times what this workflow adds to every
parse: the import closures of all stages (``ast``) and the config validation are inside the no-op.
Usage: python benchmarks/noop_rerun.py [--workdir DIR] [--config 'train={epochs: 1}'] [--json F]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from camvidseg.workflow import codegraph  # noqa: E402


def snakemake(snakefile: Path, workdir: Path, *args: str) -> tuple[float, str]:
    """Wall seconds and output of one run (CPU seconds are added to CPU_SECONDS)."""
    start, cpu = time.perf_counter(), children_cpu()
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir),
         "--cores", "2", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    CPU_SECONDS.append(children_cpu() - cpu)
    if run.returncode:
        raise SystemExit(f"snakemake failed:\n{run.stdout}\n{run.stderr}")
    return seconds, run.stdout + run.stderr


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


CPU_SECONDS: list[float] = []


def best_noop(snakefile: Path, workdir: Path, repeats: int, *args: str) -> tuple[float, float]:
    """Best wall and best CPU seconds of ``repeats`` no-op runs (CPU time is what a busy
    machine changes least)."""
    times = []
    for _ in range(repeats):
        seconds, output = snakemake(snakefile, workdir, *args)
        if "Nothing to be done" not in output:
            raise SystemExit(f"not a no-op:\n{output}")
        times.append((seconds, CPU_SECONDS[-1]))
    return min(t[0] for t in times), min(t[1] for t in times)


def closure_ms() -> float:
    """CPU ms the Snakefile's ``code()`` calls cost: every stage's closure, from a cold cache."""
    stages = codegraph.stages()
    codegraph.imports.cache_clear()
    start = time.process_time()
    for stage in stages:
        codegraph.code_files(stage)
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="keep the demo run here (reused if done)")
    parser.add_argument("--configfile", type=Path, default=REPO / "config/demo.yaml")
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        help="overrides for both runs, e.g. 'train={epochs: 1}' on a busy machine: the no-op "
        "re-run checks the same jobs and files whatever the epochs",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="noop_demo."))
    overrides = ["--config", *args.config] if args.config else []
    config = ("--configfile", str(args.configfile), *overrides)
    figures = {}
    if not (workdir / "results/provenance.json").exists():
        figures["demo_run_s"], _ = snakemake(REPO / "workflow/Snakefile", workdir, *config)
    figures["noop_s"], figures["noop_cpu_s"] = best_noop(
        REPO / "workflow/Snakefile", workdir, args.repeats, *config
    )
    with tempfile.TemporaryDirectory() as tmp:
        floor = Path(tmp)
        (floor / "Snakefile").write_text('rule a:\n    output: "a"\n    shell: "touch {output}"\n')
        snakemake(floor / "Snakefile", floor)
        figures["snakemake_floor_s"], figures["snakemake_floor_cpu_s"] = best_noop(
            floor / "Snakefile", floor, args.repeats
        )
    figures["noop_vs_floor"] = figures["noop_s"] / figures["snakemake_floor_s"]
    figures["noop_vs_floor_cpu"] = figures["noop_cpu_s"] / figures["snakemake_floor_cpu_s"]
    figures["closures_ms"] = closure_ms()
    figures = {k: round(v, 3) for k, v in figures.items()} | {"config": args.config}
    print(
        f"demo no-op re-run: {figures['noop_s']:.2f} s wall, {figures['noop_cpu_s']:.2f} s CPU "
        f"(best of {args.repeats}; target <= 2 s)\n"
        f"Snakemake floor (one-rule no-op): {figures['snakemake_floor_s']:.2f} s wall, "
        f"{figures['snakemake_floor_cpu_s']:.2f} s CPU; ratio {figures['noop_vs_floor']:.2f}x "
        f"wall, {figures['noop_vs_floor_cpu']:.2f}x CPU\n"
        f"import closures of all stages: {figures['closures_ms']:.1f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
