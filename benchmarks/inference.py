"""Benchmark: inference cost and speed, PyTorch eager vs onnxruntime, in one run.

For each model (randomly initialised: speed does not depend on the weights) and each image size:
parameters, GFLOPs per image (``torch.utils.flop_counter``), and latency / images per second of
one image per call for eager PyTorch (the exported graph's module under ``inference_mode``;
autocast on CUDA as evaluate runs) and onnxruntime (the same model exported by ``export.py``,
fp32), with the same thread count; the ratio onnxruntime / eager is the figure of merit.
On a CUDA machine eager PyTorch is also timed on the GPU (and onnxruntime too if its build has
the CUDA provider; the pinned wheel is CPU-only).
Usage: python benchmarks/inference.py                      (both models, 360x480 and 720x960)
       python benchmarks/inference.py --models lraspp_mobilenet_v3_large --repeats 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from camvidseg.core.device import precision
from camvidseg.deploy import cost
from camvidseg.deploy.export import export_onnx
from camvidseg.deploy.runtime import open_session
from camvidseg.evaluation.inference import DeployedNetwork
from camvidseg.training.segmenter import Segmenter

CLASSES = 11  # the SegNet grouping published CamVid tables use
PALETTE = {"classes": [{"id": i, "name": f"class{i}", "color": [i, i, i]} for i in range(CLASSES)]}


def measure(name: str, sizes: list[tuple[int, int]], args, folder: Path) -> list[dict]:
    torch.manual_seed(0)
    model = Segmenter(name, CLASSES, aux_loss=False).eval()
    onnx_path = folder / f"{name}.onnx"
    export_onnx(model, PALETTE, {"model": name, "epoch": 0, "precision": "fp32"}, onnx_path)
    network = DeployedNetwork(model).eval()
    session = open_session(onnx_path, threads=args.threads)
    rows = []
    for height, width in sizes:
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        row = {"model": name, "size": [height, width], "threads": args.threads}
        row["params"] = cost.parameter_count(network)
        row["gflops_per_image"] = cost.gflops_per_image(network.net.cpu(), height, width)
        eager = cost.torch_speed(network, image, "cpu", "fp32", args.repeats, args.budget)
        row["cpu_eager"] = eager
        row["cpu_onnxruntime"] = cost.onnx_speed(session, image, args.repeats, args.budget)
        row["cpu_ratio"] = cost.speed_ratio(row["cpu_eager"], row["cpu_onnxruntime"])
        if torch.cuda.is_available():
            row |= cuda_speed(network, onnx_path, image, args)
        network.cpu()
        rows.append(row)
        print(describe(row), flush=True)
    return rows


def cuda_speed(network, onnx_path: Path, image: np.ndarray, args) -> dict:
    mixed = precision("cuda", amp=True)  # what a model trained on this card validates in
    row = {"cuda_eager": cost.torch_speed(network, image, "cuda", mixed, 5 * args.repeats,
                                          args.budget)}  # fmt: skip
    row["cuda_device"] = torch.cuda.get_device_name()
    session = open_session(onnx_path, device="cuda")
    if session.get_providers()[0] == "CUDAExecutionProvider":
        row["cuda_onnxruntime"] = cost.onnx_speed(session, image, 5 * args.repeats, args.budget)
        row["cuda_ratio"] = cost.speed_ratio(row["cuda_eager"], row["cuda_onnxruntime"])
    return row


def describe(row: dict) -> str:
    height, width = row["size"]
    text = (
        f"{row['model']:>28s} {height}x{width}: {row['params'] / 1e6:.2f} M params, "
        f"{row['gflops_per_image']:.1f} GFLOPs; CPU ({row['threads']} threads) img/s eager "
        f"{row['cpu_eager']['images_per_s']:.2f}, onnxruntime "
        f"{row['cpu_onnxruntime']['images_per_s']:.2f} -> {row['cpu_ratio']:.2f}x"
    )
    if "cuda_eager" in row:
        text += f"; CUDA eager {row['cuda_eager']['images_per_s']:.1f} img/s"
    if "cuda_ratio" in row:
        text += f", onnxruntime {row['cuda_onnxruntime']['images_per_s']:.1f} img/s"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["lraspp_mobilenet_v3_large", "deeplabv3_resnet50"]
    )
    parser.add_argument("--sizes", nargs="+", default=["360x480", "720x960"], help="HxW")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (at least 2)")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per timing, at most")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results/inference.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes]
    with tempfile.TemporaryDirectory() as folder:
        rows = [row for name in args.models for row in measure(name, sizes, args, Path(folder))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
