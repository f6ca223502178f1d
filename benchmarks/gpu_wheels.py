"""Download the wheels that benchmarks/gpu_proof.sh installs on the GPU machine (no network there).

That machine's image has Python 3.12 with torch, torchvision, numpy, pillow, opencv, matplotlib,
pandas, tensorboard and more, but neither MMEngine nor Snakemake. This takes the dependency closure
of the two from this project's venv (so the versions are the ones requirements.txt installed),
drops what the image already holds, and downloads the rest as CPython 3.12 manylinux wheels into
``.whl/`` (a wheel is built from the sdist where PyPI has none). ``make gpu-wheels`` runs it.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

ROOTS = ("mmengine-lite", "snakemake")
# Shipped even though the image has them: snakemake pins packaging<26, the image's may be newer.
ALWAYS = {"packaging"}
# Python packages of the GPU machine's image (names as the device notes list them).
GPU_IMAGE = {
    line.strip()
    for line in (Path(__file__).parent / "gpu_image_packages.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (28, 27, 24, 17, 5)]
PLATFORMS += ["manylinux2014_x86_64", "manylinux1_x86_64"]
MAX_MB = 40


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: tuple[str, ...]) -> dict[str, str]:
    """name -> installed version, for the roots and everything they require (no extras)."""
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = normal(todo.pop())
        if name in found:
            continue
        dist = md.distribution(name)
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def download(pins: list[str], dest: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    binary = [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    binary += ["--python-version", "3.12", "--implementation", "cp"]
    binary += [arg for p in PLATFORMS for arg in ("--platform", p)]
    for pin in pins:
        if subprocess.run([*binary, pin], capture_output=True, check=False).returncode:
            print(f"{pin}: no wheel on the index, building one from the sdist", flush=True)
            wheel = [*pip, "wheel", "--quiet", "--no-deps", "-w", str(dest), pin]
            subprocess.run(wheel, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(".whl"))
    args = parser.parse_args()
    needed = {n: v for n, v in closure(ROOTS).items() if n not in GPU_IMAGE or n in ALWAYS}
    if args.dest.exists() and any(not p.name.endswith(".whl") for p in args.dest.iterdir()):
        sys.exit(f"error: {args.dest}: holds more than wheels; not replacing it")
    # A fresh folder: two versions of one package would stop the whole install there.
    with tempfile.TemporaryDirectory(dir=args.dest.resolve().parent) as tmp:
        download([f"{n}=={v}" for n, v in sorted(needed.items())], Path(tmp))
        shutil.rmtree(args.dest, ignore_errors=True)
        Path(tmp).rename(args.dest)
        Path(tmp).mkdir()  # for the context manager's cleanup
    wheels = sorted(args.dest.glob("*.whl"))
    size_mb = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels in {args.dest}, {size_mb:.1f} MB")
    if size_mb > MAX_MB:
        sys.exit(f"error: {args.dest}: {size_mb:.0f} MB of wheels, more than {MAX_MB} MB travel")


if __name__ == "__main__":
    main()
