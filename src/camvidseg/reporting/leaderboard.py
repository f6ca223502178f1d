"""The experiments side by side: a leaderboard (CSV, Markdown, HTML; best validation mIoU first),
their training curves overlaid and their per-class IoU as grouped bars.

Reads each experiment's folder ``<root>/<name>/`` as the workflow lays it out:
``metrics/<split>.json``, ``model/best.pth`` and ``model/history.json`` (which also holds the wall
time of every attempt of the training: the first job and each resume).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, read_json
from ..data.identity import HashCache, content_id
from ..workflow.experiments import differing, flatten
from ..workflow.madeby import Record
from .figures import pyplot, save
from .pages import shown_value, write_table_page


def ranking_split(splits: list[str]) -> str:
    return "val" if "val" in splits else splits[0]


def training_seconds(history: Path) -> float:
    """Wall time of the training, summed over its attempts (a resumed training has several)."""
    attempts = read_json(history).get("attempts") or []
    if not attempts:
        raise UserError(f"{history}: no training attempts recorded (trained by an older version?)")
    return sum(attempt["seconds"] for attempt in attempts)


def model_facts(path: Path) -> tuple[int, str]:
    """Parameter count of the trained network, and its file's content identity: the hash that
    results/provenance.json records for it."""
    from ..training.segmenter import load_trained

    model, _ = load_trained(path)
    parameters = sum(p.numel() for p in model.parameters())
    return parameters, content_id(path, HashCache.from_env())


def experiment_row(name: str, settings: dict, folder: Path, metrics: dict, images: int) -> dict:
    """One experiment's row; ``metrics`` maps each split to its metrics JSON."""
    splits = list(metrics)
    ranked_by = ranking_split(splits)
    main = metrics[ranked_by]
    seconds = training_seconds(folder / "model" / "history.json")
    parameters, model_id = model_facts(folder / "model" / "best.pth")
    flat = flatten(settings)
    return {
        "experiment": name,
        "settings": flat,
        **{f"{split}_mIoU": metrics[split]["mIoU"] for split in splits},
        f"{ranked_by}_mAcc": main["mAcc"],
        f"{ranked_by}_aAcc": main["aAcc"],
        "best_epoch": main["epoch"],
        "train_seconds": round(seconds, 1),
        # Images trained per second of all its attempts (startup and validation included).
        "train_img_per_s": round(settings["train"]["epochs"] * images / seconds, 2),
        "parameters": parameters,
        "model_id": model_id,
    }


def rank(rows: list[dict], splits: list[str]) -> list[dict]:
    key = f"{ranking_split(splits)}_mIoU"
    return sorted(rows, key=lambda r: (-(r[key] if r[key] is not None else -1), r["experiment"]))


def table(rows: list[dict], varied: list[str]) -> tuple[list[str], list[list]]:
    """Columns and cells: the experiment, its differing settings, then the facts."""
    facts = [k for k in rows[0] if k not in ("experiment", "settings")] if rows else []
    columns = ["experiment", *varied, *facts]
    cells = [[r["experiment"], *(r["settings"].get(k) for k in varied), *(r[k] for k in facts)]
             for r in rows]  # fmt: skip
    return columns, cells


def write_tables(columns: list[str], cells: list[list], args: argparse.Namespace) -> None:
    with atomic_path(args.csv) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([[json.dumps(v) if isinstance(v, list) else v for v in row]
                          for row in cells])  # fmt: skip
    shown = [[shown_value(v) for v in row] for row in cells]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in shown]
    with atomic_path(args.markdown) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_table_page(args.html, "Leaderboard", "leaderboard", columns, shown)


def plot_curves(histories: dict[str, dict], path: Path) -> None:
    """Training loss per iteration and validation mIoU per epoch, every experiment overlaid."""
    fig, (loss_ax, miou_ax) = pyplot().subplots(1, 2, figsize=(12, 4.5))
    for name, history in histories.items():
        train, val = history["train"], history["val"]
        loss_ax.plot([r["iter"] for r in train], [r["loss"] for r in train], lw=1, label=name)
        miou_ax.plot([r["epoch"] for r in val], [r["mIoU"] for r in val], marker="o", label=name)
    loss_ax.set(xlabel="iteration", ylabel="training loss", title="Training loss")
    miou_ax.set(xlabel="epoch", ylabel="val mIoU", title="Validation mIoU", ylim=(0, 1))
    for ax in (loss_ax, miou_ax):
        ax.grid(alpha=0.3)
    miou_ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save(fig, path)


def plot_iou(metrics: dict[str, dict[str, dict]], splits: list[str], path: Path) -> None:
    """Per-class IoU, one group of bars per class (one bar per experiment), a panel per split."""
    names = list(metrics)
    size = (12, 3.6 * len(splits))
    fig, axes = pyplot().subplots(len(splits), 1, figsize=size, squeeze=False)
    for ax, split in zip(axes[:, 0], splits, strict=True):
        unscored = {m["reason"] for n in names if not (m := metrics[n][split]).get("scored", True)}
        if unscored:  # one dataset for all experiments: the split has nothing to score
            ax.axis("off")
            ax.set_title(f"{split}: not scored ({'; '.join(sorted(unscored))})", loc="left")
            continue
        per_class = {n: metrics[n][split]["per_class"] for n in names}
        classes = [c["class"] for c in per_class[names[0]]]
        scored = [k for k in range(len(classes))
                  if any(per_class[n][k]["IoU"] is not None for n in names)]  # fmt: skip
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            values = [per_class[name][k]["IoU"] or 0.0 for k in scored]
            ax.bar(np.arange(len(scored)) + i * width, values, width, label=name)
        ax.set_xticks(np.arange(len(scored)) + 0.4 - width / 2)
        ax.set_xticklabels([classes[k] for k in scored], rotation=60, ha="right", fontsize=7)
        ax.set(ylim=(0, 1), ylabel="IoU", title=f"Per-class IoU ({split})")
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].legend(fontsize=7, ncol=min(len(names), 4))
    fig.tight_layout()
    save(fig, path)


def train_set_size(prepared: Path) -> int:
    return len(read_json(prepared / "index.json")["splits"]["train"])


@cli
def main(argv: list[str] | None = None) -> None:
    p = command.parser(__file__, __doc__)
    p.add_argument("--experiments", required=True, help="JSON {name: settings} of every one")
    p.add_argument("--root", required=True, type=Path, help="folder of the experiment folders")
    p.add_argument("--prepared", required=True, type=Path, help="the prepared dataset")
    p.add_argument("--splits", nargs="+", required=True, help="evaluated splits")
    p.add_argument("--csv", required=True, type=Path, help="the leaderboard as CSV")
    p.add_argument("--markdown", required=True, type=Path, help="the same as a Markdown table")
    p.add_argument("--html", required=True, type=Path, help="the same as HTML (for the report)")
    p.add_argument("--curves", required=True, type=Path, help="overlaid curves (.png)")
    p.add_argument("--iou", required=True, type=Path, help="per-class IoU bars (.png)")
    args = p.parse_args(argv)
    settings = json.loads(args.experiments)
    if not settings:
        raise UserError("--experiments: no experiments to rank")
    read = [args.root / n / f for n in settings for f in ["model/history.json"] +
            [f"metrics/{s}.json" for s in args.splits]]  # fmt: skip
    made = Record(
        __file__,
        args,
        [args.prepared, *read],
        [args.csv, args.markdown, args.html, args.curves, args.iou],
    )
    images = train_set_size(args.prepared)
    metrics = {n: {s: read_json(args.root / n / "metrics" / f"{s}.json") for s in args.splits}
               for n in settings}  # fmt: skip
    rows = [experiment_row(n, s, args.root / n, metrics[n], images) for n, s in settings.items()]
    rows = rank(rows, args.splits)
    write_tables(*table(rows, differing(settings)), args)
    order = [r["experiment"] for r in rows]
    histories = {n: read_json(args.root / n / "model" / "history.json") for n in order}
    plot_curves(histories, args.curves)
    plot_iou({n: metrics[n] for n in order}, args.splits, args.iou)
    made.write()
    best = rows[0]
    key = f"{ranking_split(args.splits)}_mIoU"
    print(f"{len(rows)} experiments ranked; best: {best['experiment']} ({key} {best[key]:.4f})")


if __name__ == "__main__":
    main()
