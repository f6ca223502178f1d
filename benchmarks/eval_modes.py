"""Benchmark: evaluation images/s, whole-image vs sliding-window inference, in one run.

Times ``evaluation.inference.predict_batch`` (what evaluate, visualize and predict run: uint8 batch
-> normalised on the device -> logits under the evaluation precision -> class ids) on the same
images for each mode, one image per call as the evaluate stage feeds it. Slide windows and stride
are the schema's ``eval.crop_size`` / ``eval.stride`` defaults.
Usage: python benchmarks/eval_modes.py --model deeplabv3_resnet50 --size 720 960
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from camvidseg.core import settings
from camvidseg.evaluation import inference
from camvidseg.training.segmenter import Segmenter


def modes() -> dict[str, dict]:
    slide = inference.WHOLE | {"mode": "slide", "crop_size": settings.default("eval.crop_size"),
                               "stride": settings.default("eval.stride")}  # fmt: skip
    return {"whole": inference.WHOLE, "slide": slide}


def images_per_s(model, images: torch.Tensor, device: str, setting: dict, warmup: int) -> float:
    for image in images[:warmup]:
        inference.predict_batch(model, image[None], device, setting)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for image in images:  # the class ids leave the device, as the metric reads them
        inference.predict_batch(model, image[None], device, setting).cpu()
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3_resnet50")
    parser.add_argument("--size", type=int, nargs=2, default=[720, 960], metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=20, help="timed images per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--classes", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = device == "cuda"
    torch.manual_seed(0)
    model = Segmenter(args.model, args.classes, aux_loss=False).to(device).eval()
    images = torch.randint(0, 256, (args.images, 3, *args.size), dtype=torch.uint8)
    results = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "model": args.model,
        "size": args.size,
        "images": args.images,
    }
    for name, setting in modes().items():
        results[f"{name}_setting"] = setting
        results[f"{name}_img_per_s"] = images_per_s(model, images, device, setting, args.warmup)
        print(f"{name}: {results[f'{name}_img_per_s']:.2f} img/s", flush=True)
    results["slide_vs_whole"] = results["slide_img_per_s"] / results["whole_img_per_s"]
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
