"""Stage 3b: convert label images to single-channel class-index masks, once, in parallel.

RGB masks go through one table lookup (24-bit color -> train id), not one pass per class. Masks
are written as palette PNGs (mode ``P``) so they still look right in an image viewer. Colors (or
SegNet ids) outside the palette are counted per file and mapped to the ignore index, or are an
error with ``--strict-colors`` (always an error for the SegNet layout, whose ids are fixed).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .. import IGNORE_INDEX
from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, read_json, write_json
from ..core.progress import Progress
from ..core.settings import default, describe, option, positive_int
from ..workflow.madeby import Record
from .budget import UnpackBudget
from .colors import color_table
from .images import checked_size, read_ids, read_rgb
from .palette import UNKNOWN_ID, check_class_count

_table: np.ndarray | None = None
_job: dict = {}
_cache_arrays: dict[str, np.ndarray] = {}  # this worker's open cache files


def lookup_table(palette: dict) -> np.ndarray:
    """Dense table from the label value (24-bit color, or index) to train id."""
    if palette["encoding"] == "rgb":
        table = np.full(1 << 24, UNKNOWN_ID, dtype=np.uint8)
        for entry in palette["lookup"]:
            r, g, b = entry["value"]
            table[(r << 16) | (g << 8) | b] = entry["train_id"]
    else:
        table = np.full(256, UNKNOWN_ID, dtype=np.uint8)
        for entry in palette["lookup"]:
            table[entry["value"]] = entry["train_id"]
    return table


def label_values(path: Path, encoding: str) -> np.ndarray:
    """The label as stored: (H, W, 3) RGB colors, or (H, W) index values."""
    return read_rgb(path, "label") if encoding == "rgb" else read_ids(path, "label")


def label_ids(values: np.ndarray, path: Path, encoding: str, table: np.ndarray) -> np.ndarray:
    if encoding == "rgb":
        rgb = values.astype(np.uint32)
        return table[(rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]]
    if values.max(initial=0) > 255:
        raise UserError(f"{path}: label id {int(values.max())} is not a known class id")
    return table[values.astype(np.int64)]


def _init_worker(table: np.ndarray, job: dict) -> None:
    global _table, _job
    _table, _job = table, job


def _cache_array(path: str) -> np.ndarray:
    """This worker's writable view of a cache file (opened once per process)."""
    if path not in _cache_arrays:
        _cache_arrays[path] = np.load(path, mmap_mode="r+")
    return _cache_arrays[path]


def convert_one(task: tuple) -> tuple[str, int, list, int]:
    """Convert one label; returns (file, unknown pixel count, a few unknown values, pixels of a
    trained class)."""
    image_path, label_path, out_path = (Path(p) for p in task[:3])
    cache_slot = task[3]  # (images .npy, masks .npy, row) or None
    assert _table is not None
    image = read_rgb(image_path, "image")
    values = label_values(label_path, _job["encoding"])
    ids = label_ids(values, label_path, _job["encoding"], _table)
    if ids.shape != image.shape[:2]:
        raise UserError(
            f"{label_path}: label size {ids.shape[1]}x{ids.shape[0]} differs from image "
            f"{image_path.name} size {image.shape[1]}x{image.shape[0]}"
        )
    unknown = ids == UNKNOWN_ID
    count = int(unknown.sum())
    examples: list = []
    if count:
        examples = [v.tolist() for v in np.unique(values[unknown], axis=0)[:3]]
        if _job["strict"] or _job["encoding"] == "index":
            what = "color" if _job["encoding"] == "rgb" else "id"
            raise UserError(
                f"{label_path}: {count} pixel(s) with {what} {examples[0]} not in the palette"
            )
        ids = np.where(unknown, IGNORE_INDEX, ids).astype(np.uint8)
    mask = Image.fromarray(ids, mode="P")
    mask.putpalette(_job["colors"])
    mask.save(out_path, optimize=False, compress_level=1)
    if cache_slot is not None:
        images_npy, masks_npy, row = cache_slot
        _cache_array(images_npy)[row] = image
        _cache_array(masks_npy)[row] = ids
    return str(label_path), count, examples, int((ids != IGNORE_INDEX).sum())


class DecodeBudget(UnpackBudget):
    """The unpack limits, held against what converting writes instead of what an archive
    declares: a small file of a huge flat picture is a decompression bomb too."""

    SOURCE = "the dataset files'"

    def refusal(self, name: str, what: str) -> UserError:
        return UserError(
            f"{name}: refusing to decode: the pictures up to this one make {self.total} bytes "
            f"of masks and image cache, more than {what}"
        )


def image_sizes(manifest: dict, out: Path, cache_images: bool, limits: tuple) -> dict:
    """Split -> (width, height) of each image from its header, once what converting writes is
    within ``limits`` (max ratio, max GiB; the free disk of ``out``), before anything is
    written: a mask byte per pixel, and with the cache 3 image bytes and a mask byte more."""
    root = Path(manifest["root"])
    pairs = {split: [(root / p["image"], root / p["label"]) for p in found]
             for split, found in manifest["splits"].items()}  # fmt: skip
    files = [path for found in pairs.values() for pair in found for path in pair]
    budget = DecodeBudget(files, out, *limits)
    bytes_per_pixel = 1 + (4 if cache_images else 0)
    sizes = {}
    for split, found in pairs.items():
        sizes[split] = [checked_size(image, "image") for image, _ in found]
        for (image, _), (width, height) in zip(found, sizes[split], strict=True):
            budget.add(str(image), width * height * bytes_per_pixel)
    return sizes


def create_cache(out: Path, split: str, sizes: list[tuple[int, int]]) -> tuple[str, str] | None:
    """Preallocate ``cache/{split}_{images,masks}.npy`` (uint8, memory-mappable), or None when
    the split's images differ in size (then the loader decodes PNGs instead)."""
    count, sizes = len(sizes), set(sizes)
    if len(sizes) != 1:
        print(f"{split}: images of {len(sizes)} different sizes, not cached")
        return None
    width, height = sizes.pop()
    (out / "cache").mkdir(exist_ok=True)
    names = (f"cache/{split}_images.npy", f"cache/{split}_masks.npy")
    for name, shape in zip(names, ((height, width, 3), (height, width)), strict=True):
        np.lib.format.open_memmap(
            out / name, mode="w+", dtype=np.uint8, shape=(count, *shape)
        ).flush()
    return names


def image_ref(image: Path, final_dir: Path) -> str:
    """Image path as index.json stores it: relative to the output folder when the dataset root
    is relative (so results/ can move as a whole), absolute when the user gave an absolute one."""
    return str(image) if image.is_absolute() else os.path.relpath(image, final_dir)


def convert_dataset(
    manifest: dict,
    palette: dict,
    out: Path,
    threads: int,
    strict: bool,
    final_dir: Path,
    cache_images: bool,
    limits: tuple,
) -> dict:
    root = Path(manifest["root"])
    sizes = image_sizes(manifest, out, cache_images, limits)
    tasks, index, caches, split_of = [], {}, {}, {}
    for split, pairs in manifest["splits"].items():
        (out / "masks" / split).mkdir(parents=True, exist_ok=True)
        index[split] = []
        cache = create_cache(out, split, sizes[split]) if cache_images else None
        if cache:
            caches[split] = {"images": cache[0], "masks": cache[1]}
        for row, pair in enumerate(pairs):
            mask_rel = f"masks/{split}/{pair['stem']}.png"
            slot = (str(out / cache[0]), str(out / cache[1]), row) if cache else None
            tasks.append(
                (str(root / pair["image"]), str(root / pair["label"]), str(out / mask_rel), slot)
            )
            split_of[str(root / pair["label"])] = split
            index[split].append(
                {
                    "stem": pair["stem"],
                    "image": image_ref(root / pair["image"], final_dir),
                    "mask": mask_rel,
                }
            )
    job = {
        "encoding": palette["encoding"],
        "strict": strict,
        "colors": color_table(palette).reshape(-1).tolist(),
    }
    table = lookup_table(palette)
    unknown: dict[str, int] = {}
    trained = dict.fromkeys(index, 0)  # pixels of a trained class, per split
    ctx = multiprocessing.get_context("fork")
    with (
        ctx.Pool(max(threads, 1), initializer=_init_worker, initargs=(table, job)) as pool,
        Progress("convert", len(tasks), "masks") as progress,
    ):
        for label, count, examples, known in pool.imap_unordered(convert_one, tasks, chunksize=4):
            if count:
                unknown[label] = count
                print(f"warning: {label}: {count} pixel(s) of unknown color(s) {examples} ignored")
            trained[split_of[label]] += known
            progress.advance()
    refuse_splits_without_classes(trained, index, manifest)
    return {"splits": index, "cache": caches, "unknown_pixels": unknown}


def refuse_splits_without_classes(trained: dict[str, int], index: dict, manifest: dict) -> None:
    """A split whose labels hold no pixel of a trained class would train on nothing (a NaN
    loss) or score nothing: the labels are of another encoding than the palette reads."""
    for split, pixels in trained.items():
        if index[split] and not pixels:
            raise UserError(
                f"{manifest.get('class_dict') or manifest['layout']}: no pixel of the "
                f"{len(index[split])} {split} labels has the value of a trained class (index "
                "or gray masks where RGB ones are expected? see dataset.layout and "
                "dataset.ignore_classes)"
            )


def prepare(
    manifest: dict,
    palette: dict,
    out: Path,
    threads: int,
    strict: bool,
    cache_images: bool,
    limits: tuple = (default("dataset.max_unpack_ratio"), default("dataset.max_unpack_gib")),
) -> dict:
    """Write the whole ``out`` folder (masks, cache, index.json) or nothing; return the index.
    ``limits``: the unpack limits (max ratio, max GiB) what decoding writes is held to."""
    with atomic_path(out, is_dir=True) as tmp:
        index = convert_dataset(
            manifest, palette, tmp, threads, strict, out, cache_images, limits
        )
        # The data's identity (extract stage) keys the training fingerprint, which hashes this file.
        index["content_id"] = manifest.get("content_id")
        index["left_out"] = manifest.get("left_out", {})  # splits without labels, and why
        # Mask and cache paths are relative to the folder, so they survive the rename.
        write_json(tmp / "index.json", index)
    return index


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command.parser(__file__, __doc__)
    parser.add_argument("--manifest", required=True, help="dataset.json from the extract stage")
    parser.add_argument("--palette", required=True, help="palette.json from the palette stage")
    parser.add_argument("--out", required=True, type=Path, help="folder for masks and index.json")
    parser.add_argument(
        "--threads", type=positive_int, default=os.cpu_count() or 1, help="worker processes"
    )
    parser.add_argument(
        "--strict-colors", action="store_true", help=describe("dataset.strict_colors")
    )
    parser.add_argument("--cache-images", **option("dataset.cache_images"))
    parser.add_argument("--max-unpack-ratio", **option("dataset.max_unpack_ratio"))
    parser.add_argument("--max-unpack-gib", **option("dataset.max_unpack_gib"))
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    made = Record(__file__, args, [args.manifest, args.palette], [args.out])
    manifest, palette = read_json(args.manifest), read_json(args.palette)
    check_class_count(palette, args.palette)
    limits = (args.max_unpack_ratio, args.max_unpack_gib)
    index = prepare(
        manifest, palette, args.out, args.threads, args.strict_colors, args.cache_images, limits
    )
    made.write()
    total = sum(index["unknown_pixels"].values())
    if total:
        print(
            f"{total} pixel(s) of unknown colors in {len(index['unknown_pixels'])} file(s) "
            "mapped to the ignore index",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
