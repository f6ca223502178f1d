"""Pictures read without guessing: legends for every color shown (the ignored area too), no
legend over the data, confusion numbers and class names large enough at 100 % zoom."""

import numpy as np
from PIL import Image

from camvidseg import IGNORE_INDEX
from camvidseg.data.palette import build_rgb_palette, legend_entries
from camvidseg.evaluation.panel import save_panel
from camvidseg.reporting.plots import confusion_heatmap, per_class_iou

CLASS_DICT = [("Sky", (128, 128, 128)), ("Road", (128, 64, 128)), ("Car", (64, 0, 128)),
              ("Void", (0, 0, 0))]  # fmt: skip


def metrics(ious):
    names = [f"class_{i}" for i in range(len(ious))]
    confusion = np.diag(np.full(len(ious), 90))
    confusion[0, 1] = 10  # one confusion: 10 % of class_0 taken for class_1
    return {
        "split": "val",
        "mIoU": float(np.mean(ious)),
        "per_class": [{"class": n, "IoU": v} for n, v in zip(names, ious, strict=True)],
        "confusion": confusion.tolist(),
    }


def test_legend_names_the_ignored_area_with_its_color():
    palette = build_rgb_palette(CLASS_DICT, "camvid32", ["Void"])
    entries = legend_entries(palette, {0, 2, IGNORE_INDEX})
    assert entries == [("Sky", (128, 128, 128)), ("Car", (64, 0, 128)),
                       ("ignored (Void)", (0, 0, 0))]  # fmt: skip
    assert legend_entries(palette, {1}) == [("Road", (128, 64, 128))]


def test_panel_draws_every_column_and_the_legend(tmp_path):
    picture = np.zeros((30, 40, 3), np.uint8)
    picture[:, 20:] = (128, 64, 128)
    path = tmp_path / "panel.png"
    save_panel(path, [("image", picture), ("prediction", picture), ("overlay", picture)],
               [("Road", (128, 64, 128)), ("ignored (Void)", (0, 0, 0))], "a.png")  # fmt: skip
    panel = np.asarray(Image.open(path).convert("RGB"))
    road = np.all(panel == (128, 64, 128), axis=-1)
    columns = np.flatnonzero(road.any(axis=0))
    assert panel.shape[1] >= 3 * 300 and np.ptp(columns) > panel.shape[1] / 2  # three pictures
    legend_band = road[int(0.85 * panel.shape[0]) :]
    assert legend_band.any()  # the Road swatch below the pictures


def test_iou_chart_legend_covers_no_bar():
    fig = per_class_iou(metrics([0.95, 0.9, 0.99, 0.2, 0.97]))
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    for bar in ax.patches:
        assert not legend.overlaps(bar.get_window_extent()), "legend hides a bar"


def test_confusion_matrix_names_both_axes_and_prints_numbers_at_9pt():
    fig = confusion_heatmap(metrics([0.9] * 31))  # CamVid's 31 trained classes
    ax = fig.axes[0]
    names = [f"class_{i}" for i in range(31)]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    numbers = [t for t in ax.texts if t.get_text().isdigit()]
    assert len(numbers) == 32 and all(t.get_fontsize() >= 9 for t in numbers)
    cell_inches = fig.get_figwidth() / 31
    assert cell_inches >= 0.45  # room for a two-digit number at 9 pt
