"""Rewrite a score table in README.md (and the pictures it shows, in docs/) from a run's
results/, so the README shows what the code produces. Each table sits between
``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``.

  python tools/readme_tables.py demo results          # after `make demo`
  python tools/readme_tables.py real-data results     # after `make real-data ...`
  python tools/readme_tables.py real-data results/experiments/NAME   # or one experiment's run
  python tools/readme_tables.py real-data-sweep results   # after the sweep (README, Experiments)

The run's metrics JSONs (for a sweep: results/leaderboard.md and .csv), its training history and
its provenance record (results/provenance.json: settings, code hashes, package versions, git
commit, output hashes) are kept in docs/results/NAME/, and the table is rendered from that copy.
tests/test_readme_tables.py checks that the README's tables equal it, that it is what the recorded
run wrote, and, for the demo, that the record is of this code and of config/demo.yaml (else it
runs the demo again and compares).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
KEPT = REPO / "docs" / "results"  # per table: the metrics and provenance record it comes from
# Pictures the README shows, per table: docs/ file <- the first match in the run's results/.
PICTURES = {
    "demo": {"docs/demo_panel.png": "vis_data/val_*_panel.png",
             "docs/demo_training_curves.png": "plots/training_curves.png"},
    "real-data": {"docs/segnet_trainval_panel.png": "vis_data/val_*_panel.png",
                  "docs/segnet_trainval_curves.png": "plots/training_curves.png"},
    "real-data-sweep": {"docs/segnet_sweep_curves.png": "leaderboard_curves.png"},
}  # fmt: skip
# Tables that show a sweep's leaderboard (as results/leaderboard.md has it), not split scores.
LEADERBOARDS = {"real-data-sweep"}
LEADERBOARD_FILES = ("leaderboard.md", "leaderboard.csv")
KEYS = ("mIoU", "mAcc", "aAcc", "mDice")
HISTORY = "model/history.json"  # loss per logged step, val scores per validation


def split_metrics(results: Path) -> list[Path]:
    """The scores of each split in ``results/metrics/``, val first."""
    paths = sorted((results / "metrics").glob("*.json"), key=lambda p: (p.stem != "val", p.stem))
    return [path for path in paths if "split" in json.loads(path.read_text())]


# Scores of the same code, config and packages agree bitwise on one machine type; on another CPU
# the kernels (vectorisation, threading) round differently and training drifts: a fresh clone's
# demo on an AMD EPYC gave val/test mIoU 0.7062/0.7217 where the record says 0.7166/0.7332.
# The README states this spread; tests/test_readme_tables.py allows it, no more.
CPU_SPREAD = 0.02


def render(results: Path, name: str = "demo") -> str:
    """The markdown table of every split scored in ``results/metrics/``, val first; for a
    leaderboard table, ``results/leaderboard.md``."""
    if name in LEADERBOARDS:
        return (results / "leaderboard.md").read_text().strip()
    lines = ["| split | " + " | ".join(KEYS) + " | classes scored |", "|---" * 6 + "|"]
    for path in split_metrics(results):
        metrics = json.loads(path.read_text())
        if not metrics.get("scored", True):  # e.g. a copy without test labels: said, no number
            lines.append(
                f"| {metrics['split']} |" + " – |" * len(KEYS) + " not scored: no labels |"
            )
            continue
        scores = " | ".join(f"{metrics[k]:.4f}" for k in KEYS)
        lines.append(f"| {metrics['split']} | {scores} | {metrics['num_classes_scored']} |")
    return "\n".join(lines)


def block(name: str) -> re.Pattern:
    """The README block of table ``name`` (``real-data`` is not ``real-data-sweep``)."""
    name = re.escape(name)
    opening = rf"<!-- table:{name}(?= |-->)[^>]*-->\n"
    return re.compile(rf"({opening})(.*?)(\n<!-- /table:{name} -->)", re.S)


def current(name: str, readme: str) -> str:
    """The table the README shows now."""
    found = block(name).search(readme)
    if not found:
        raise SystemExit(f"error: README.md has no <!-- table:{name} --> block")
    return found.group(2)


def run_record(results: Path) -> Path:
    """The run's provenance record: in ``results/``, or above it for an experiment's folder
    (``results/experiments/NAME``)."""
    for folder in (results, *results.parents):
        if (folder / "provenance.json").is_file():
            return folder / "provenance.json"
    raise SystemExit(f"error: no provenance.json in {results} or above (the last rule writes it)")


# Which data each table is about: the built-in sample (make demo) or real CamVid.
OF_THE_SAMPLE = {"demo": True, "real-data": False, "real-data-sweep": False}


def check(name: str, results: Path) -> Path:
    """The run's record, once ``results`` is known to make table ``name``: a run on the other
    data, or without the files the table shows, is refused before anything is written."""
    record = run_record(results)
    of_the_sample = "sample" in json.loads(record.read_text()).get("stages", {})
    if of_the_sample != OF_THE_SAMPLE[name]:
        ran = "the built-in sample" if of_the_sample else "real data"
        wanted = "the built-in sample" if OF_THE_SAMPLE[name] else "real CamVid"
        raise SystemExit(f"error: {results} is a run on {ran}; the {name} table is of {wanted}")
    if name in LEADERBOARDS:
        missing = [file for file in LEADERBOARD_FILES if not (results / file).is_file()]
    else:
        missing = [] if split_metrics(results) else ["metrics/<split>.json"]
    if missing:
        raise SystemExit(f"error: {results} has no {', '.join(missing)} (the {name} table's)")
    return record


def keep(name: str, results: Path, record: Path) -> Path:
    """Copy the run's split metrics (or leaderboard) and provenance record to docs/results/NAME/
    (replacing the previous copy), byte for byte, so their hashes are the ones the record gives."""
    kept = KEPT / name
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    shutil.copyfile(record, kept / "provenance.json")
    if name in LEADERBOARDS:
        for file in LEADERBOARD_FILES:
            shutil.copyfile(results / file, kept / file)
    else:
        (kept / "metrics").mkdir()
        for path in split_metrics(results):
            shutil.copyfile(path, kept / "metrics" / path.name)
        if (results / HISTORY).is_file():  # the training curve's numbers
            shutil.copyfile(results / HISTORY, kept / "history.json")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="which table: demo, real-data or real-data-sweep")
    parser.add_argument("results", type=Path, help="the run's results/ folder")
    args = parser.parse_args()
    text = README.read_text()
    current(args.name, text)
    kept = keep(args.name, args.results, check(args.name, args.results))
    table = render(kept, args.name)
    README.write_text(block(args.name).sub(lambda m: m.group(1) + table + m.group(3), text))
    print(table)
    print(f"{kept.relative_to(REPO)}/ <- {args.results}/ (scores and provenance.json)")
    for target, pattern in PICTURES.get(args.name, {}).items():
        found = sorted(args.results.glob(pattern))
        if found:
            shutil.copyfile(found[0], REPO / target)
            print(f"{target} <- {found[0]}")


if __name__ == "__main__":
    main()
