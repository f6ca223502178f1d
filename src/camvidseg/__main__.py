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
        print("usage: camvidseg <stage> [--help]\n\nstages:")
        for name, what in STAGES.items():
            print(f"  {name:10s} {what}")
        return 0 if len(sys.argv) < 2 else 2
    module = importlib.import_module(f"camvidseg.{sys.argv[1]}")
    return module.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
