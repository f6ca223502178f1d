"""Benchmark: how fast `camvidseg <stage> --help` answers (goal: under 1 s for every stage).

Each stage's `--help` runs in a fresh interpreter, best of --repeats; the baseline measured in the
same run is a bare interpreter start (`python -c pass`) and, for scale, `import torch` — what
`--help` of evaluate/visualize/predict used to pay before parsing.
Usage: python benchmarks/cli_help.py [--repeats 5] [--json benchmarks/results/cli_help.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
from camvidseg.workflow.codegraph import stages  # noqa: E402

STAGES = stages()


def best_seconds(command: list[str], repeats: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (best counts)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    python = [sys.executable]
    figures = {
        "python -c pass": best_seconds([*python, "-c", "pass"], args.repeats),
        "python -c 'import torch'": best_seconds([*python, "-c", "import torch"], args.repeats),
    }
    for stage in STAGES:
        figures[f"camvidseg {stage} --help"] = best_seconds(
            [*python, "-m", "camvidseg", stage, "--help"], args.repeats
        )
    figures["camvidseg --help"] = best_seconds([*python, "-m", "camvidseg", "--help"], 3)
    bare = figures["python -c pass"]
    for name, seconds in figures.items():
        print(f"{name:32s} {seconds:6.3f} s   {seconds / bare:5.1f}x a bare interpreter start")
    slowest = max(v for k, v in figures.items() if k.startswith("camvidseg"))
    verdict = "met" if slowest < 1 else "NOT met"
    print(f"slowest --help {slowest:.3f} s: goal < 1 s {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"seconds": figures, "slowest_help": slowest}, indent=2))


if __name__ == "__main__":
    main()
