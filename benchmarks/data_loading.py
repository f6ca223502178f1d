"""Benchmark: per-sample loading, original example vs this project, plus mask conversion time.

Makes a CamVid-sized set (720x960, the 32 CamVid classes) with the project's scene generator, runs
the project's own extract/palette/convert stages on it, then times in one run:
  (a) the original example's ``__getitem__`` (benchmarks/original_example.py),
  (b) this project's ``SegmentationDataset.__getitem__`` (from the convert stage's uint8 cache),
on the mask path alone and on the whole sample (image decode included).
Usage: python benchmarks/data_loading.py [--masks 701] [--samples 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from camvid_like import prepared_set  # also puts src/ on the path
from original_example import mask_only, original_dataset

from camvidseg.data.dataset import SegmentationDataset, read_mask


def per_sample_ms(fn, count: int, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(count):
            fn(i)
        best = min(best, (time.perf_counter() - start) / count)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=701, help="images in the generated set")
    parser.add_argument("--samples", type=int, default=40, help="samples timed per loader")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--cache", type=Path, help="keep the generated archive here for reruns")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = (args.cache or tmp) / f"camvid_like_{args.masks}.tar.gz"
        sizes = {"train": args.masks - 2, "val": 1, "test": 1}
        manifest, _, prep, convert_s = prepared_set(tmp, sizes, 720, 960, args.threads, archive)

        root = manifest["root"]
        original = original_dataset(root, "train")
        ours = SegmentationDataset(prep, "train")
        n = min(args.samples, len(ours))
        figures = {
            "masks_converted": args.masks,
            "convert_s": round(convert_s, 2),
            "convert_threads": args.threads,
            "mask_ms_original": per_sample_ms(lambda i: mask_only(original, i), n),
            "mask_ms_ours": per_sample_ms(lambda i: ours.load(i)[1], n),
            "mask_ms_ours_png": per_sample_ms(lambda i: read_mask(prep / ours.items[i]["mask"]), n),
            "sample_ms_original": per_sample_ms(lambda i: original[i], n),
            "sample_ms_ours": per_sample_ms(lambda i: ours[i], n),
        }
        figures["mask_speedup"] = figures["mask_ms_original"] / figures["mask_ms_ours"]
        figures["sample_speedup"] = figures["sample_ms_original"] / figures["sample_ms_ours"]
    print(
        f"mask conversion: {args.masks} masks in {figures['convert_s']:.1f} s "
        f"on {args.threads} processes"
    )
    print(f"{'':24s}{'original':>12s}{'this project':>14s}{'speed-up':>10s}")
    for what, key in (("mask path (ms/sample)", "mask"), ("whole sample (ms/sample)", "sample")):
        print(
            f"{what:24s}{figures[f'{key}_ms_original']:12.1f}{figures[f'{key}_ms_ours']:14.1f}"
            f"{figures[f'{key}_speedup']:9.1f}x"
        )
    print(f"(mask from its palette PNG instead of the cache: {figures['mask_ms_ours_png']:.1f} ms)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
