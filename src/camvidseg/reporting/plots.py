"""Plots of a run: training curves, per-class IoU bars, row-normalised confusion matrix (PNG)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, read_json
from ..workflow.madeby import Record
from . import pages
from .figures import pyplot, save


def training_curves(history: dict, path: Path) -> None:
    plt = pyplot()
    fig, (loss_ax, miou_ax) = plt.subplots(1, 2, figsize=(11, 4))
    train = history["train"]
    if not train:
        raise UserError("training history holds no loss values")
    loss_ax.plot([r["iter"] for r in train], [r["loss"] for r in train], lw=1)
    loss_ax.set(xlabel="iteration", ylabel="training loss", title="Training loss")
    loss_ax.grid(alpha=0.3)
    val = history["val"]
    miou_ax.plot([r["epoch"] for r in val], [r["mIoU"] for r in val], marker="o")
    miou_ax.set(xlabel="epoch", ylabel="val mIoU", title="Validation mIoU", ylim=(0, 1))
    miou_ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path)


def per_class_iou(metrics: dict):
    """Horizontal IoU bars per class with the mIoU as a dashed line (a figure)."""
    plt = pyplot()
    rows = [r for r in metrics["per_class"] if r["IoU"] is not None][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.8))
    bars = ax.barh([r["class"] for r in rows], [r["IoU"] for r in rows], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=8)
    ax.axvline(metrics["mIoU"], color="tab:red", ls="--", label=f"mIoU {metrics['mIoU']:.3f}")
    ax.set(xlim=(0, 1.08), xlabel="IoU")
    ax.set_title(f"Per-class IoU ({metrics['split']})", loc="left")
    # Above the axes, right of the title: inside, it would hide a bar.
    ax.legend(loc="lower right", bbox_to_anchor=(1, 1), borderaxespad=0.2, frameon=False)
    fig.tight_layout()
    return fig


def not_scored(metrics: dict):
    """The figure of a split with nothing to score on: the reason, in place of a chart."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 1.6))
    ax.axis("off")
    ax.text(0, 0.5, f"{metrics['split']}: not scored\n{metrics['reason']}", va="center", wrap=True)
    return fig


def confusion_heatmap(metrics: dict):
    """Row-normalised confusion matrix in percent, class names on both axes (a figure)."""
    cm = np.asarray(metrics["confusion"], dtype=np.float64)
    names = [r["class"] for r in metrics["per_class"]]
    keep = (cm.sum(0) + cm.sum(1)) > 0  # classes seen in ground truth or prediction
    cm, names = cm[keep][:, keep], [n for n, k in zip(names, keep, strict=True) if k]
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(1, keepdims=True))
    plt = pyplot()
    # Half an inch per cell: a two-digit percentage at 9 pt fits, readable at 100 % zoom.
    size = 0.5 * len(names) + 2.5
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(100 * norm, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.set(
        xlabel="predicted class",
        ylabel="ground-truth class",
        title=f"Confusion matrix ({metrics['split']}): % of each ground-truth row",
    )
    for (r, c), v in np.ndenumerate(100 * norm):
        if v >= 0.5:
            color = "white" if v > 50 else "black"
            ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=9, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, label="% of the row")
    fig.tight_layout()
    return fig


def summary_table(all_metrics: list[dict], csv_path: Path, html_path: Path | None) -> None:
    """Headline scores per split as CSV, and as an HTML page (scores and per-class IoU) for
    the report, which shows HTML but only offers CSV files as downloads."""
    keys = ("mIoU", "mAcc", "aAcc", "mDice")

    def fmt(value) -> str:
        return "" if value is None else f"{value:.4f}"

    def note(m: dict) -> str:
        return "" if m.get("scored", True) else f"not scored: {m['reason']}"

    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["split", *keys, "classes_scored", "note"])
        for m in all_metrics:
            writer.writerow(
                [m["split"], *(fmt(m[k]) for k in keys), m["num_classes_scored"], note(m)]
            )
    if html_path is None:
        return
    summary = [
        [m["split"], *(fmt(m[k]) for k in keys), m["num_classes_scored"], note(m)]
        for m in all_metrics
    ]
    scored = [m for m in all_metrics if m.get("scored", True)]
    names = [c["class"] for c in scored[0]["per_class"]] if scored else []
    per_class = [
        [name, *(fmt(m["per_class"][k]["IoU"]) for m in scored)]
        for k, name in enumerate(names)
        if any(m["per_class"][k]["IoU"] is not None for m in scored)
    ]
    splits = [f"{m['split']} IoU" for m in scored]
    header = ["split", *keys, "classes scored", "note"]
    body = (
        pages.heading("Metrics")
        + pages.table("summary", header, summary, row_headers=True)
        + pages.paragraph(
            "Fractions in 0-1; means over classes present in ground truth or prediction."
        )
        + pages.heading("Per-class IoU", 3)
        + pages.table("per-class", ["class", *splits], per_class, row_headers=True)
    )
    pages.write_page(html_path, "Metrics", body)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    parser.add_argument("--history", required=True, type=Path, help="history.json from training")
    parser.add_argument(
        "--metrics", nargs="+", type=Path, default=[], help="{split}.json files from evaluate"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNGs")
    parser.add_argument("--summary", type=Path, help="CSV of the headline scores per split")
    parser.add_argument("--summary-html", type=Path, help="the same, with per-class IoU, as HTML")
    args = parser.parse_args(argv)
    made = Record(__file__, args, [args.history, args.metrics], [args.summary, args.summary_html])
    args.out.mkdir(parents=True, exist_ok=True)
    pictures = [args.out / "training_curves.png"]
    training_curves(read_json(args.history), pictures[0])
    all_metrics = [read_json(path) for path in args.metrics]
    for metrics in all_metrics:
        split = metrics["split"]
        pictures += [args.out / f"per_class_iou_{split}.png", args.out / f"confusion_{split}.png"]
        if not metrics.get("scored", True):
            save(not_scored(metrics), pictures[-2])
            save(not_scored(metrics), pictures[-1])
            print(f"{split}: not scored: {metrics['reason']}")
            continue
        save(per_class_iou(metrics), pictures[-2])
        save(confusion_heatmap(metrics), pictures[-1])
    if args.summary:
        summary_table(all_metrics, args.summary, args.summary_html)
    made.write([*pictures, args.summary, args.summary_html])
    print(f"plots in {args.out}")


if __name__ == "__main__":
    main()
