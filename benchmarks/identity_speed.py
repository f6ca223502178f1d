"""Benchmark: what the data's content identity costs at every parse of the Snakefile.

A folder dataset of CamVid's size (701 images + 701 labels, in CamVid's folders) is identified by
hashing every file's relative path, size and mtime; the baseline, timed in the same run, is the
bare walk that only lists and stats those files (no identity could cost less). An archive's sha256
is computed once; later parses look it up by path, size and mtime (baseline: the first hashing).
Usage: python benchmarks/identity_speed.py [--files 1402] [--archive-mib 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from camvidseg.data.identity import HashCache, content_id, folder_id


def best_seconds(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bare_walk(folder: Path) -> int:
    walk = os.walk(folder)
    return sum(os.stat(os.path.join(top, name)).st_size for top, _, names in walk for name in names)


def camvid_folder(root: Path, files: int) -> None:
    """Empty-content stand-ins are enough: the identity never reads the bytes."""
    per_split = {"train": 367, "val": 101, "test": 233}
    scale = files / (2 * sum(per_split.values()))
    for split, count in per_split.items():
        for folder in (root / split, root / f"{split}_labels"):
            folder.mkdir(parents=True)
        for i in range(round(count * scale)):
            (root / split / f"0016E5_{i:05d}.png").write_bytes(b"x" * 100)
            (root / f"{split}_labels" / f"0016E5_{i:05d}_L.png").write_bytes(b"y" * 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1402, help="files in the folder dataset")
    parser.add_argument("--archive-mib", type=int, default=256, help="size of the archive")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        camvid_folder(tmp / "CamVid", args.files)
        count = sum(len(f) for _, _, f in os.walk(tmp / "CamVid"))
        folder_s = best_seconds(lambda: folder_id(tmp / "CamVid"))
        walk_s = best_seconds(lambda: bare_walk(tmp / "CamVid"))
        archive = tmp / "CamVid.tar.gz"
        with archive.open("wb") as handle:
            for _ in range(args.archive_mib):
                handle.write(os.urandom(1 << 20))
        cache_file = tmp / "hashes.json"
        start = time.perf_counter()
        cache = HashCache(cache_file)
        content_id(archive, cache)
        cache.save()
        first_s = time.perf_counter() - start
        cached_s = best_seconds(lambda: content_id(archive, HashCache(cache_file)))
    figures = {
        "folder_files": count,
        "folder_identity_s": round(folder_s, 4),
        "bare_walk_s": round(walk_s, 4),
        "folder_vs_bare_walk": round(folder_s / walk_s, 2),
        "archive_mib": args.archive_mib,
        "archive_first_hash_s": round(first_s, 3),
        "archive_cached_s": round(cached_s, 5),
        "archive_first_vs_cached": round(first_s / cached_s, 1),
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"folder of {count} files: identity {folder_s * 1000:.1f} ms, bare walk+stat "
        f"{walk_s * 1000:.1f} ms ({figures['folder_vs_bare_walk']}x)\n"
        f"archive of {args.archive_mib} MiB: first sha256 {first_s:.2f} s, later parses "
        f"{cached_s * 1000:.2f} ms ({figures['archive_first_vs_cached']}x less)"
    )


if __name__ == "__main__":
    main()
