"""Figures as files: matplotlib on the file-only Agg backend, PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

from ..core.fileio import atomic_path


def pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use: it takes half a second,
    which `--help` should not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    """Write ``fig`` as a PNG at ``path`` (complete or not at all) and free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    pyplot().close(fig)
