"""Metric arithmetic: hand-computed cases and an independent NumPy reference on random data."""

import numpy as np
import pytest
import torch

from camvidseg.evaluation.metrics import SegMetric, confusion_matrix, summarize

NAMES = ["a", "b", "c"]


def scores(pred, label, names=NAMES):
    cm = confusion_matrix(torch.tensor(pred), torch.tensor(label), len(names))
    return summarize(cm.numpy(), names)


def test_hand_computed_case_with_an_absent_class():
    # label: a a b b ; pred: a b b b ; class c absent from both
    s = scores([0, 1, 1, 1], [0, 0, 1, 1])
    iou = {c["class"]: c["IoU"] for c in s["per_class"]}
    assert iou == {"a": pytest.approx(1 / 2), "b": pytest.approx(2 / 3), "c": None}
    assert s["mIoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # c is not averaged in
    assert s["aAcc"] == pytest.approx(3 / 4)
    assert s["mAcc"] == pytest.approx((1 / 2 + 1) / 2)
    assert s["per_class"][1]["Dice"] == pytest.approx(2 * 2 / (2 + 3))
    assert s["num_classes_scored"] == 2


def test_ignore_index_pixels_are_excluded():
    s = scores([0, 2, 2], [0, 255, 255])
    assert s["mIoU"] == 1.0 and s["pixels_scored"] == 1
    assert s["per_class"][2]["IoU"] is None  # predictions on ignored pixels do not count


def test_all_ignored_image_scores_nothing():
    s = scores([0, 1], [255, 255])
    assert s["mIoU"] is None and s["aAcc"] is None and s["num_classes_scored"] == 0


def test_perfect_and_completely_wrong():
    assert scores([0, 1, 2], [0, 1, 2])["mIoU"] == 1.0
    wrong = scores([1, 2, 0], [0, 1, 2])
    assert wrong["mIoU"] == 0.0 and wrong["aAcc"] == 0.0


def reference_iou(preds, labels, k):
    """Independent per-image-free reference: per-class set arithmetic over all pixels."""
    p, t = np.concatenate([x.ravel() for x in preds]), np.concatenate([x.ravel() for x in labels])
    keep = t != 255
    p, t = p[keep], t[keep]
    ious = []
    for c in range(k):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        ious.append(inter / union if union else np.nan)
    return np.array(ious)


def test_metric_over_batches_matches_reference_on_random_data():
    rng = np.random.default_rng(0)
    k = 6
    preds = [rng.integers(0, k, (2, 17, 23)) for _ in range(5)]
    labels = [
        np.where(rng.random((2, 17, 23)) < 0.1, 255, rng.integers(0, k, (2, 17, 23)))
        for _ in range(5)
    ]
    metric = SegMetric([str(i) for i in range(k)])
    for p, t in zip(preds, labels, strict=True):
        metric.process(
            {},
            [
                {"pred": torch.tensor(a), "label": torch.tensor(b)}
                for a, b in zip(p, t, strict=True)
            ],
        )
    result = metric.evaluate(5)
    expected = reference_iou(preds, labels, k)
    got = np.array([c["IoU"] for c in metric.summary["per_class"]], dtype=float)
    np.testing.assert_allclose(got, expected)
    assert result["mIoU"] == pytest.approx(np.nanmean(expected))
    assert 0 <= result["mIoU"] <= 1
