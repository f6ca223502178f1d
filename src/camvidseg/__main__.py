"""``camvidseg <stage> ...``: each stage of the workflow as a command (``python -m camvidseg``)."""

from __future__ import annotations

import importlib
import sys

STAGES = {
    "sample": "make the embedded CamVid-format sample archive",
    "obtain": "download the dataset archive or backbone weights",
    "extract": "extract safely and check the layout",
    "palette": "parse class_dict.csv into palette.json",
    "convert": "RGB/SegNet labels to class-index masks",
    "train": "train through an MMEngine Runner",
    "evaluate": "per-class IoU / mIoU on a split",
    "visualize": "image | prediction | label panels",
    "plots": "training curves, IoU bars, confusion matrix",
    "predict": "segment a folder of new images",
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        unknown = len(sys.argv) >= 2
        out = sys.stderr if unknown else sys.stdout
        if unknown:
            print(f"error: unknown stage {sys.argv[1]!r}", file=out)
        print("usage: camvidseg <stage> [--help]\n\nstages:", file=out)
        for name, what in STAGES.items():
            print(f"  {name:10s} {what}", file=out)
        return 2 if unknown else 0
    module = importlib.import_module(f"camvidseg.{sys.argv[1]}")
    return module.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
