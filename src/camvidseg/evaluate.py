"""Stage 5: score the trained model on a split: ``{split}.json`` and ``{split}_per_class.csv``.

Uses the same ``SegMetric`` as training's validation (a dataset-wide confusion matrix); inference
is whole-image at full resolution.
"""

from __future__ import annotations

import csv
from pathlib import Path

from . import command
from .errors import cli
from .fileio import atomic_path, read_json, write_json

# torch and the model code are imported where used, so that `--help` answers at once.


def evaluate(model, dataset, class_names: list[str], device: str) -> dict:
    import torch

    from .inference import predict_batch
    from .metrics import SegMetric

    metric = SegMetric(class_names)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=0)
    step = max(len(dataset) // 10, 1)
    for i, batch in enumerate(loader, start=1):
        preds = predict_batch(model, batch["inputs"], device)
        labels = batch["data_samples"]["labels"].to(preds.device)
        metric.process(
            batch, [{"pred": p, "label": lab} for p, lab in zip(preds, labels, strict=True)]
        )
        if i % step == 0 or i == len(dataset):
            print(f"evaluated {i}/{len(dataset)} images", flush=True)
    metric.evaluate(len(dataset))
    return metric.summary | {"confusion": metric.confusion.astype(int).tolist()}


def write_per_class_csv(summary: dict, path: Path) -> None:
    columns = ("class", "IoU", "Acc", "Dice", "gt_pixels", "pred_pixels")
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in summary["per_class"]:
            writer.writerow(
                "" if row[k] is None else round(row[k], 4) if isinstance(row[k], float) else row[k]
                for k in columns
            )


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    parser.add_argument("--model", required=True, type=Path, help="best.pth from training")
    parser.add_argument(
        "--prepared", required=True, type=Path, help="folder from the convert stage"
    )
    parser.add_argument("--palette", required=True, type=Path, help="palette.json")
    parser.add_argument("--split", required=True, help="train, val or test")
    command.add_device(parser)
    parser.add_argument("--out-json", required=True, type=Path, help="scores to write (.json)")
    parser.add_argument("--out-csv", required=True, type=Path, help="per-class table (.csv)")
    args = parser.parse_args(argv)

    from .dataset import SegmentationDataset
    from .inference import pick_device
    from .model import load_trained
    from .palette import class_names

    device = pick_device(args.device)
    model, meta = load_trained(args.model, device)
    names = class_names(read_json(args.palette))
    summary = evaluate(model, SegmentationDataset(args.prepared, args.split), names, device)
    summary = {"split": args.split, "model": meta["model"], "epoch": meta["epoch"]} | summary
    write_json(args.out_json, summary)
    write_per_class_csv(summary, args.out_csv)
    print(
        f"{args.split}: mIoU {summary['mIoU']:.4f}  mAcc {summary['mAcc']:.4f}  "
        f"aAcc {summary['aAcc']:.4f}  ({summary['num_classes_scored']} classes scored)"
    )


if __name__ == "__main__":
    main()
