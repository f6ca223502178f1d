"""The benchmarks' data: a generated CamVid-format set or a real dataset folder, taken through the
project's own extract, palette (all 32 classes, as the original example trains) and convert
stages."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from camvidseg.data.convert import prepare
from camvidseg.data.extract import extract_archive, index_dataset
from camvidseg.data.palette import make_palette
from camvidseg.data.sample import build_sample


def prepared_set(
    workdir: Path,
    sizes: dict[str, int],
    height: int,
    width: int,
    threads: int = 2,
    archive: Path | None = None,
) -> tuple[dict, dict, Path, float]:
    """(manifest, palette, prepared folder, seconds the convert stage took). ``archive`` keeps
    the generated images between runs when given."""  # fmt: skip
    archive = archive or workdir / "camvid_like.tar.gz"
    if not archive.exists():
        start = time.perf_counter()
        build_sample(archive, sizes, height, width, seed=0)
        print(f"generated {sum(sizes.values())} images of {height}x{width} "
              f"in {time.perf_counter() - start:.0f} s")  # fmt: skip
    extract_archive([archive], workdir / "extracted")
    return prepared_folder(workdir, workdir / "extracted", threads)


def prepared_folder(
    workdir: Path, dataset: Path, threads: int = 2
) -> tuple[dict, dict, Path, float]:
    """A CamVid or SegNet-layout folder, read in place, converted into ``workdir/prepared``."""
    manifest = index_dataset(dataset)
    palette = make_palette(manifest, "camvid32", [])
    start = time.perf_counter()
    prepare(manifest, palette, workdir / "prepared", threads, strict=False, cache_images=True)
    return manifest, palette, workdir / "prepared", time.perf_counter() - start
