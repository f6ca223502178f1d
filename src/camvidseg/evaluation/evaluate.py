"""Stage 5: score the trained model on a split: ``{split}.json`` and ``{split}_per_class.csv``.

Uses the same ``SegMetric`` as training's validation (a dataset-wide confusion matrix), at full
resolution, with the inference of ``eval.mode`` and ``eval.tta`` (whole image, sliding windows,
multi-scale and flip). When that is not plain whole-image inference, the whole-image scores are
computed too and both are recorded under ``modes``, so the report can show them side by side.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, read_json, write_json
from ..core.progress import Progress
from ..core.settings import option
from ..workflow.madeby import Record

# torch and the model code are imported where used, so that `--help` answers at once.

HEADLINE = ("mIoU", "mAcc", "aAcc", "mDice", "num_classes_scored")


def evaluation_loader(dataset, batch_size: int, workers: int, device: str):
    """The split in order, in batches of one image size (``SameSizeBatches``), read by
    ``workers`` processes into pinned memory on CUDA."""
    import torch

    from ..data.dataset import SameSizeBatches

    batches = SameSizeBatches(range(len(dataset)), batch_size, dataset)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, pin_memory=device == "cuda"
    )


def evaluate(
    model,
    dataset,
    class_names: list[str],
    device: str,
    settings: list[dict],
    split: str = "",
    batch_size: int = 1,
    workers: int = 0,
) -> list:
    """One summary (scores, per class, confusion) per inference setting, in the same order."""
    from .inference import predict_batch
    from .metrics import SegMetric

    metrics = [SegMetric(class_names) for _ in settings]
    loader = evaluation_loader(dataset, batch_size, workers, device)
    with Progress(f"evaluate {split}".strip(), len(dataset), "images") as progress:
        for batch in loader:
            for metric, setting in zip(metrics, settings, strict=True):
                preds = predict_batch(model, batch["inputs"], device, setting)
                labels = batch["data_samples"]["labels"].to(preds.device)
                samples = [{"pred": p, "label": lab} for p, lab in zip(preds, labels, strict=True)]
                metric.process(batch, samples)
            progress.advance(len(batch["inputs"]))
    summaries = []
    for metric in metrics:
        metric.evaluate(len(dataset))
        summaries.append(metric.summary | {"confusion": metric.confusion.astype(int).tolist()})
    return summaries


def inference_setting(args: argparse.Namespace) -> dict:
    """The ``eval`` section's inference keys from the command line, checked."""
    setting = {
        "mode": args.mode,
        "crop_size": list(args.crop_size),
        "stride": list(args.stride),
        "tta": {"flip": args.flip, "scales": [float(s) for s in args.scales]},
    }
    if args.mode == "slide" and any(
        s > c for s, c in zip(args.stride, args.crop_size, strict=True)
    ):
        raise UserError(
            f"eval.stride: {args.stride} exceeds eval.crop_size {args.crop_size}; windows would "
            "leave pixels unscored"
        )
    if not args.scales or any(s <= 0 for s in args.scales):
        raise UserError(f"eval.tta.scales: {args.scales} must be one or more positive numbers")
    if args.mode == "whole":
        setting["crop_size"] = setting["stride"] = None
    return setting


def settings_to_score(setting: dict) -> list[dict]:
    """The configured inference, and whole-image inference beside it when that differs."""
    from .inference import WHOLE, is_whole

    return [setting] if is_whole(setting) else [setting, WHOLE]


def score_modes(setting: dict, summaries: list[dict]) -> dict:
    """``modes``: headline scores per inference setting, keyed by its label."""
    from .inference import mode_label

    settings = settings_to_score(setting)
    return {
        mode_label(s): {k: summary[k] for k in HEADLINE}
        for s, summary in zip(settings, summaries, strict=True)
    }


def write_unscored(args: argparse.Namespace, head: dict, images: int, reason: str) -> None:
    """A split with nothing to score on: its metrics say so (no score, no per-class rows)."""
    summary = (
        head
        | {"scored": False, "reason": reason, "images": images}
        | dict.fromkeys(("mIoU", "mAcc", "aAcc", "mDice"))
        | {"num_classes_scored": 0, "pixels_scored": 0, "per_class": [], "modes": {}}
    )
    write_json(args.out_json, summary)
    write_per_class_csv(summary, args.out_csv)
    print(f"{args.split}: not scored: {reason}")


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


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """``eval.mode``, ``eval.crop_size``, ``eval.stride``, ``eval.tta.*`` as flags."""
    parser.add_argument("--mode", **option("eval.mode"))
    parser.add_argument("--crop-size", metavar=("H", "W"), **option("eval.crop_size"))
    parser.add_argument("--stride", metavar=("H", "W"), **option("eval.stride"))
    parser.add_argument("--flip", **option("eval.tta.flip"))
    parser.add_argument("--scales", metavar="S", **option("eval.tta.scales"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command.parser(__file__, __doc__)
    command.add_trained_model(parser, required=True, help="train, val or test")
    add_inference_options(parser)
    parser.add_argument("--batch-size", **option("eval.batch_size"))
    parser.add_argument("--num-workers", **option("eval.num_workers"))
    outputs = {"--out-json": "scores to write (.json)", "--out-csv": "per-class table (.csv)"}
    command.add_paths(parser, outputs)
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    made = Record(
        __file__, args, [args.model, args.prepared, args.palette], [args.out_json, args.out_csv]
    )
    from ..core.device import resolve
    from ..data.dataset import SegmentationDataset
    from ..data.palette import class_names, read_palette_of
    from ..training.segmenter import load_trained, precision_line, trained_classes
    from .inference import mode_label

    setting = inference_setting(args)
    device = resolve(args.device, "--device")
    model, meta = load_trained(args.model, device)
    print(precision_line(args.model, meta), flush=True)
    names = class_names(read_palette_of(args.palette, args.model, trained_classes(meta)))
    head = (
        {"split": args.split, "model": meta["model"], "epoch": meta["epoch"]}
        | {"precision": model.precision}  # the one training's validation used
        | {"inference": setting | {"label": mode_label(setting)}}
    )
    left_out = read_json(args.prepared / "index.json").get("left_out", {}).get(args.split)
    if left_out is not None:
        write_unscored(args, head, 0, left_out)
        made.write()
        return
    settings = settings_to_score(setting)
    dataset = SegmentationDataset(args.prepared, args.split)
    summaries = evaluate(
        model, dataset, names, device, settings, args.split, args.batch_size, args.num_workers
    )
    if not summaries[0]["pixels_scored"]:
        reason = f"the {len(dataset)} {args.split} images have no labelled pixel (all ignored)"
        write_unscored(args, head, len(dataset), reason)
        made.write()
        return
    summary = head | {"scored": True} | summaries[0] | {"modes": score_modes(setting, summaries)}
    write_json(args.out_json, summary)
    write_per_class_csv(summary, args.out_csv)
    made.write()
    for label, scores in summary["modes"].items():
        print(
            f"{args.split} [{label}]: mIoU {scores['mIoU']:.4f}  mAcc {scores['mAcc']:.4f}  "
            f"aAcc {scores['aAcc']:.4f}  ({scores['num_classes_scored']} classes scored)"
        )


if __name__ == "__main__":
    main()
