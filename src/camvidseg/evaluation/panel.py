"""Side-by-side pictures with a legend of the classes they show (visualize and predict).

Drawn with Pillow alone: predict's onnx backend runs in the slim deploy environment (onnxruntime,
numpy, Pillow), which has no matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core.fileio import atomic_path

MIN_COLUMN_WIDTH = 400  # small images are enlarged (nearest neighbour) to at least this width
MARGIN, GAP, SWATCH = 12, 8, 16
FONT_SIZE = 15
TEXT, BACKGROUND = (20, 20, 20), (255, 255, 255)


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _enlarged(picture: np.ndarray) -> Image.Image:
    image = Image.fromarray(picture)
    factor = max(1, -(-MIN_COLUMN_WIDTH // image.width))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def _legend_rows(legend, width: int, draw: ImageDraw.ImageDraw) -> list[list]:
    """Legend entries wrapped into rows that fit ``width``: [(x, name, color), ...] per row."""
    rows, row, x = [], [], MARGIN
    for name, color in legend:
        entry = SWATCH + 6 + draw.textlength(name, font=_font()) + 2 * GAP
        if row and x + entry > width - MARGIN:
            rows.append(row)
            row, x = [], MARGIN
        row.append((x, name, color))
        x += entry
    return [*rows, row] if row else rows


def save_panel(
    path: Path,
    columns: list[tuple[str, np.ndarray]],
    legend: list[tuple[str, tuple[int, int, int]]],
    title: str,
) -> None:
    """``columns`` of (heading, RGB array) in a row under ``title``, ``legend`` (name, color)
    below them, written to ``path`` as PNG."""
    pictures = [_enlarged(picture) for _, picture in columns]
    width = sum(p.width for p in pictures) + GAP * (len(pictures) - 1) + 2 * MARGIN
    line = FONT_SIZE + 8
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows = _legend_rows(legend, width, probe)
    top = MARGIN + 2 * line
    height = top + max(p.height for p in pictures) + MARGIN + line * len(rows) + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((width / 2, MARGIN), title, fill=TEXT, font=_font(), anchor="ma")
    x = MARGIN
    for (heading, _), picture in zip(columns, pictures, strict=True):
        draw.text((x + picture.width / 2, MARGIN + line), heading, fill=TEXT, font=_font(),
                  anchor="ma")  # fmt: skip
        canvas.paste(picture, (x, top))
        x += picture.width + GAP
    y = top + max(p.height for p in pictures) + MARGIN
    for row in rows:
        for left, name, color in row:
            draw.rectangle((left, y, left + SWATCH, y + SWATCH), fill=tuple(color),
                           outline=(128, 128, 128))  # fmt: skip
            draw.text((left + SWATCH + 6, y), name, fill=TEXT, font=_font())
        y += line
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
