"""Display colors of the trained classes (palette.json): color masks, overlays, legends.

Apart from ``palette`` (which parses the classes): training reads the class table, never these
colors, so editing them re-runs the stages that draw (visualize, predict), not training.
"""

from __future__ import annotations

import numpy as np

from .. import IGNORE_INDEX


def color_table(palette: dict):
    """(256, 3) uint8 array: train id -> display color; ignore and unused ids are black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for c in palette["classes"]:
        table[c["id"]] = c["color"]
    return table


def legend_entries(palette: dict, present: set[int]) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, display color) of the ``present`` train ids in id order; the ignore index, where
    present, as "ignored (<the classes mapped to it>)" in its own display color."""
    entries = [(c["name"], tuple(c["color"])) for c in palette["classes"] if c["id"] in present]
    if IGNORE_INDEX in present:
        names = [e["name"] for e in palette.get("lookup", []) if e["train_id"] == IGNORE_INDEX]
        shown = ", ".join(names[:2]) + (", …" if len(names) > 2 else "")
        label = f"ignored ({shown})" if names else "ignored"
        entries.append((label, tuple(int(v) for v in color_table(palette)[IGNORE_INDEX])))
    return entries


def colorize(ids: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) RGB; the ignore index shows black."""
    return colors[ids]


def overlay(image: np.ndarray, ids: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(ids, colors)
    return blended.clip(0, 255).astype(np.uint8)
