"""Stage 5's arithmetic: a dataset-wide confusion matrix and the scores derived from it.

mIoU, mAcc and mDice average over the classes present in the ground truth or the prediction (as
MMSegmentation does: a class absent from both has no IoU); aAcc is the overall pixel accuracy.
Pixels labelled with the ignore index are excluded everywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from .. import IGNORE_INDEX


def confusion_matrix(
    pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """(K, K) int64 counts, rows = ground truth, columns = prediction."""
    label = label.reshape(-1).long()
    pred = pred.reshape(-1).long()
    valid = (label != ignore_index) & (label < num_classes)
    flat = label[valid] * num_classes + pred[valid]
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def summarize(confusion: np.ndarray, class_names: list[str]) -> dict:
    """Scores (fractions in 0-1) from a confusion matrix; absent classes get None."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    gt = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
        dice = np.where(gt + pred > 0, 2 * tp / (gt + pred), np.nan)

    def mean(values: np.ndarray) -> float | None:
        return float(np.nanmean(values)) if np.isfinite(values).any() else None

    def opt(value: float) -> float | None:
        return None if np.isnan(value) else float(value)

    total = gt.sum()
    return {
        "mIoU": mean(iou),
        "mAcc": mean(acc),
        "aAcc": float(tp.sum() / total) if total else None,
        "mDice": mean(dice),
        "averaged_over": "classes present in ground truth or prediction",
        "num_classes_scored": int(np.isfinite(iou).sum()),
        "pixels_scored": int(total),
        "per_class": [
            {
                "class": name,
                "IoU": opt(iou[k]),
                "Acc": opt(acc[k]),
                "Dice": opt(dice[k]),
                "gt_pixels": int(gt[k]),
                "pred_pixels": int(pred[k]),
            }
            for k, name in enumerate(class_names)
        ],
    }


class SegMetric(BaseMetric):
    """MMEngine metric: accumulates the confusion matrix over batches and ranks."""

    default_prefix = ""

    def __init__(self, class_names: list[str], ignore_index: int = IGNORE_INDEX, **kwargs):
        super().__init__(**kwargs)
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.summary: dict | None = None
        self.confusion: np.ndarray | None = None

    def process(self, data_batch, data_samples) -> None:
        k = len(self.class_names)
        cm = sum(
            confusion_matrix(s["pred"], s["label"], k, self.ignore_index) for s in data_samples
        )
        self.results.append(cm.cpu())

    def compute_metrics(self, results: list) -> dict:
        self.confusion = torch.stack(results).sum(0).numpy()
        self.summary = summarize(self.confusion, self.class_names)
        logger = MMLogger.get_current_instance()
        rows = [
            f"{c['class']:>18s} IoU {c['IoU']:.3f}"
            for c in self.summary["per_class"]
            if c["IoU"] is not None
        ]
        logger.info("per-class IoU:\n" + "\n".join(rows))
        return {k: self.summary[k] or 0.0 for k in ("mIoU", "mAcc", "aAcc", "mDice")}
