"""The run's headline: its scores first, as people look for them when they open the report.

One HTML fragment (``results/headline.html``) that the report shows on its first page, before the
description of the workflow, and that reads on its own in a browser: the mIoU of every scored
split (a split left unscored says why), the per-class IoU as bars, one prediction panel
(image | prediction | label) and, with experiments, the leaderboard. With experiments the
headline is the best one's (the leaderboard's first row).

Reads each run's folder as the workflow lays it out: ``metrics/<split>.json`` and
``vis_data/*_panel.png``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, read_json
from ..workflow.madeby import Record
from . import pages

LEADERBOARD_COLUMNS = ("experiment", "val_mIoU", "test_mIoU", "best_epoch", "train_seconds")


def best_run(runs: list[Path], leaderboard: Path | None) -> tuple[Path, str]:
    """The run to headline and its experiment's name ("" for a single run)."""
    if leaderboard is None:
        if len(runs) != 1:
            raise UserError(f"{len(runs)} runs and no leaderboard: which one leads is not known")
        return runs[0], ""
    with leaderboard.open(newline="") as handle:
        best = next(csv.DictReader(handle), None)
    if best is None:
        raise UserError(f"{leaderboard}: no experiment in the leaderboard")
    for run in runs:
        if run.name == best["experiment"]:
            return run, best["experiment"]
    raise UserError(f"{leaderboard}: best experiment {best['experiment']!r} is not among --runs")


def scores_line(metrics: dict[str, dict]) -> str:
    """``val mIoU 0.7166 · test: not scored (why)``, the numbers in large type."""
    items = [
        (f"{split} mIoU", f"{scores['mIoU']:.4f}")
        if scores.get("scored", True)
        else (f"{split}: not scored ({scores['reason']})", None)
        for split, scores in metrics.items()
    ]
    return pages.figures(items, "scores", "miou")


def facts_line(scores: dict) -> str:
    """What the figures are of: the classes scored, the epoch kept, the model and precision."""
    classes = len(scores["per_class"])
    return pages.paragraph(
        f"{scores['num_classes_scored']} of {classes} classes scored (those present in the "
        f"ground truth or the prediction) · best epoch {scores['epoch']} · {scores['model']}, "
        f"{scores['precision']}"
    )


def main_split(metrics: dict[str, dict]) -> str | None:
    """The split whose per-class IoU the bars show: val when scored, else the first scored."""
    scored = [split for split, scores in metrics.items() if scores.get("scored", True)]
    return "val" if "val" in scored else next(iter(scored), None)


def panel_of(run: Path) -> Path | None:
    """The first prediction panel of the run (visualize's order), if it drew any."""
    return next(iter(sorted((run / "vis_data").glob("*_panel.png"))), None)


def headline_html(metrics: dict[str, dict], name: str, panel: Path | None,
                  leaderboard: Path | None) -> str:  # fmt: skip
    title = f"Scores of the best experiment, {name}" if name else "Scores"
    parts = [pages.heading(title), scores_line(metrics)]
    split = main_split(metrics)
    if split is not None:
        scores = metrics[split]
        scored = [c for c in scores["per_class"] if c["IoU"] is not None]
        parts.append(facts_line(scores))
        parts.append(pages.heading(f"{split} IoU per class", 3))
        parts.append(pages.bars("per-class-iou", [(c["class"], c["IoU"]) for c in scored]))
    if panel is not None:
        caption = f"{panel.name.removesuffix('_panel.png')}: image | prediction | label"
        parts.append(pages.image(panel, caption))
    if leaderboard is not None:
        with leaderboard.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        columns = [c for c in LEADERBOARD_COLUMNS if c in rows[0]]
        # A name is text, even one that looks like a number; the other cells are values.
        cells = [[row["experiment"]] + [pages.shown_value(csv_value(row[c])) for c in columns[1:]]
                 for row in rows]  # fmt: skip
        parts.append(pages.heading("Leaderboard", 3) + pages.table("leaderboard", columns, cells))
    return pages.fragment("camvidseg-headline", "".join(parts), HEADLINE_STYLE)


HEADLINE_STYLE = (
    ".scores{font-size:1.5em;margin:.3em 0}.miou{font-size:1.3em}"
    ".bars td{padding:1px 6px;border:none}.bars .bar{background:#4c78a8;height:.9em}"
    "img{max-width:100%}"
)


def csv_value(text: str):
    """A leaderboard CSV cell as the value it was written from (a number, a JSON list, text)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    parser.add_argument(
        "--runs", nargs="+", type=Path, required=True,
        help="the runs' result folders (results/, or results/experiments/<name>/ each)",
    )  # fmt: skip
    parser.add_argument("--splits", nargs="+", required=True, help="the evaluated splits")
    parser.add_argument(
        "--leaderboard", type=Path, help="with experiments: the ranked leaderboard CSV"
    )
    parser.add_argument("--out", required=True, type=Path, help="the headline to write (.html)")
    args = parser.parse_args(argv)
    run, name = best_run(args.runs, args.leaderboard)
    metric_files = {split: run / "metrics" / f"{split}.json" for split in args.splits}
    panel = panel_of(run)
    made = Record(__file__, args, [*metric_files.values(), panel, args.leaderboard], [args.out])
    metrics = {split: read_json(path) for split, path in metric_files.items()}
    with atomic_path(args.out) as tmp:
        tmp.write_text(headline_html(metrics, name, panel, args.leaderboard))
    made.write()
    print(f"headline of {name or run}: {args.out}")


if __name__ == "__main__":
    main()
