"""Stage 7: export best.pth to ONNX and check the export against PyTorch (and measure its cost).

``onnx``: ``model.onnx`` at opset ``OPSET`` (``torch.onnx.export``, the dynamo exporter), input
``image`` uint8 (batch, 3, height, width) RGB with all three sizes dynamic, output ``logits`` float
(batch, classes, height, width); normalisation is part of the graph, class names and colors are in
its metadata. ``check``: onnxruntime and PyTorch (fp32, CPU) on every image of a split; records
max |Δlogit|, the share of pixels whose argmax agrees and both mIoUs, and fails with one line when
agreement < 99.9 % or |ΔmIoU| > 0.001. It also measures what the model costs (``cost.py``).

The graph computes in fp32 (what onnxruntime runs everywhere), so parity is checked in fp32. The
checkpoint's own precision (the one its validation used) is named in the graph's metadata and the
log; where it is not fp32, the check also scores PyTorch in it, and eager CUDA speed is timed in it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, read_json, write_json
from ..core.settings import positive_int
from ..workflow.madeby import Record

# torch, onnx and onnxruntime are imported where used, so that `--help` answers at once.

# The oldest opset torch's dynamo exporter writes; onnxruntime has run it since 1.14.
OPSET = 18
MIN_AGREEMENT = 0.999
MAX_MIOU_DELTA = 0.001


def export_onnx(model, palette: dict, meta: dict, out: Path) -> None:
    """Write ``out`` (atomically) from a loaded model; metadata: classes, colors, provenance."""
    import onnx
    import torch

    from ..evaluation.inference import DeployedNetwork
    from .runtime import INPUT_NAME, OUTPUT_NAME

    network = DeployedNetwork(model).eval()
    example = torch.zeros(1, 3, 64, 96, dtype=torch.uint8)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height")}
    dims[3] = torch.export.Dim("width")
    with atomic_path(out) as tmp:
        torch.onnx.export(
            network,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_shapes={"image": dims},
            dynamo=True,
            external_data=False,
        )
        proto = onnx.load(str(tmp))
        metadata = {
            "classes": json.dumps([c["name"] for c in palette["classes"]]),
            "colors": json.dumps([c["color"] for c in palette["classes"]]),
            "model": meta["model"],
            "epoch": str(meta["epoch"]),
            "input": "image: uint8 RGB (batch, 3, height, width), any size; normalised inside",
            "output": "logits: float32 (batch, classes, height, width); argmax over classes",
            "precision": "fp32",
            "validation_precision": meta["precision"],
        }
        onnx.helper.set_model_props(proto, metadata)
        onnx.save(proto, str(tmp))


def compare(model, session, dataset, class_names: list[str]) -> dict:
    """PyTorch (fp32 on the CPU) vs onnxruntime on every image of ``dataset``; where the
    checkpoint's precision is another, PyTorch's mIoU in that one too."""
    import numpy as np
    import torch

    from ..evaluation.inference import predict_logits
    from ..evaluation.metrics import confusion_matrix, summarize
    from .runtime import onnx_logits

    k = len(class_names)
    validated = model.precision
    confusion = {"torch": 0, "onnxruntime": 0} | ({} if validated == "fp32" else {validated: 0})
    max_delta, agree, pixels = 0.0, 0, 0
    for i in range(len(dataset)):
        image, label = dataset.load(i)
        batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))[None])
        model.precision = "fp32"  # the graph's precision: parity is fp32 against fp32
        ours = predict_logits(model, batch, "cpu")
        theirs = torch.from_numpy(onnx_logits(session, batch.numpy()))
        max_delta = max(max_delta, float((ours - theirs).abs().max()))
        preds = {"torch": ours.argmax(1)[0], "onnxruntime": theirs.argmax(1)[0]}
        agree += int((preds["torch"] == preds["onnxruntime"]).sum())
        pixels += preds["torch"].numel()
        if validated != "fp32":
            model.precision = validated
            preds[validated] = predict_logits(model, batch, "cpu").argmax(1)[0]
        for name, pred in preds.items():
            confusion[name] = confusion[name] + confusion_matrix(pred, torch.from_numpy(label), k)
    model.precision = validated
    miou = {name: summarize(cm.numpy(), class_names)["mIoU"] for name, cm in confusion.items()}
    return {
        "images": len(dataset),
        "pixels": pixels,
        "max_abs_logit_diff": max_delta,
        "argmax_agreement": agree / pixels,
        "mIoU_torch": miou["torch"],
        "mIoU_onnxruntime": miou["onnxruntime"],
        "mIoU_abs_diff": abs((miou["torch"] or 0.0) - (miou["onnxruntime"] or 0.0)),
        "checkpoint_precision": validated,
        "mIoU_torch_checkpoint_precision": miou.get(validated, miou["torch"]),
    }


def verdict(parity: dict, onnx_path: Path, split: str) -> None:
    """Raise one line when the export is not faithful enough."""
    agreement, delta = parity["argmax_agreement"], parity["mIoU_abs_diff"]
    if agreement < MIN_AGREEMENT or delta > MAX_MIOU_DELTA:
        raise UserError(
            f"{onnx_path}: export check failed on {split}: argmax agrees on {agreement:.3%} of "
            f"pixels (need >= {MIN_AGREEMENT:.1%}), |ΔmIoU| {delta:.4f} (allowed "
            f"{MAX_MIOU_DELTA}), max |Δlogit| {parity['max_abs_logit_diff']:.3g}"
        )


def measure_cost(model, onnx_path: Path, image, device: str, args) -> dict:
    """Parameters, GFLOPs and eager vs onnxruntime speed at ``image``'s size (cost.py): on the
    CPU, and on CUDA too when ``device`` is cuda."""
    import torch

    from ..evaluation.inference import DeployedNetwork
    from . import cost
    from .runtime import open_session

    budget_s = args.budget
    session = open_session(onnx_path, threads=args.threads)
    network = DeployedNetwork(model).eval()
    height, width = image.shape[:2]
    # On the CPU both backends run fp32 (the graph's precision); eager CUDA runs the checkpoint's.
    speed = {"cpu": {"torch_eager": cost.torch_speed(network, image, "cpu", "fp32", 10, budget_s)}}
    speed["cpu"]["onnxruntime"] = cost.onnx_speed(session, image, 10, budget_s)
    speed["cpu"]["onnxruntime_vs_eager"] = cost.speed_ratio(
        speed["cpu"]["torch_eager"], speed["cpu"]["onnxruntime"]
    )
    if device == "cuda":
        eager = cost.torch_speed(network, image, "cuda", model.precision, 20, budget_s)
        speed["cuda"] = {"torch_eager": eager}
        cuda_session = open_session(onnx_path, device="cuda")
        if cuda_session.get_providers()[0] == "CUDAExecutionProvider":
            speed["cuda"]["onnxruntime"] = cost.onnx_speed(cuda_session, image, 20, budget_s)
        else:
            speed["cuda"]["onnxruntime"] = "not measured: this onnxruntime build has no CUDA"
    return {
        "model": model.name,
        "params": cost.parameter_count(network),
        "resolution": [height, width],
        "gflops_per_image": cost.gflops_per_image(network.net, height, width),
        "threads": torch.get_num_threads(),
        "speed": speed,
    }


def run_check(args: argparse.Namespace) -> None:
    import torch

    from ..core.device import resolve
    from ..data.dataset import SegmentationDataset
    from ..data.palette import class_names
    from ..training.segmenter import load_trained, precision_line
    from .runtime import open_session

    torch.set_num_threads(args.threads)
    model, meta = load_trained(args.model, "cpu")
    print(f"{precision_line(args.model, meta)}; parity checked in fp32, the graph's", flush=True)
    session = open_session(args.onnx, threads=args.threads)
    dataset = SegmentationDataset(args.prepared, args.split)
    if not len(dataset):
        raise UserError(f"{args.prepared}: split {args.split!r} has no images to check with")
    parity = compare(model, session, dataset, class_names(read_json(args.palette)))
    verdict(parity, args.onnx, args.split)
    summary = {"split": args.split, "onnx": str(args.onnx), "opset": OPSET} | parity
    summary |= {"min_agreement": MIN_AGREEMENT, "max_mIoU_diff": MAX_MIOU_DELTA, "passed": True}
    image = dataset.load(0)[0]
    costs = measure_cost(model, args.onnx, image, resolve(args.device, "--device"), args)
    write_json(args.out, summary)
    write_json(args.out_cost, costs)
    print(
        f"export check passed on {args.split}: argmax agreement {parity['argmax_agreement']:.4%}, "
        f"mIoU torch {parity['mIoU_torch']:.4f} / onnxruntime {parity['mIoU_onnxruntime']:.4f}, "
        f"max |Δlogit| {parity['max_abs_logit_diff']:.3g}"
    )
    cpu = costs["speed"]["cpu"]
    print(
        f"cost: {costs['params'] / 1e6:.2f} M params, {costs['gflops_per_image']:.2f} GFLOPs at "
        f"{costs['resolution'][0]}x{costs['resolution'][1]}; CPU img/s eager "
        f"{cpu['torch_eager']['images_per_s']:.2f}, onnxruntime "
        f"{cpu['onnxruntime']['images_per_s']:.2f} ({cpu['onnxruntime_vs_eager']:.2f}x)"
    )


def run_export(args: argparse.Namespace) -> None:
    from ..training.segmenter import load_trained, precision_line

    model, meta = load_trained(args.model, "cpu")
    print(f"{precision_line(args.model, meta)}; model.onnx computes in fp32", flush=True)
    export_onnx(model, read_json(args.palette), meta, args.out)
    print(f"exported {meta['model']} (epoch {meta['epoch']}) to {args.out} (opset {OPSET})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command.parser(__file__, __doc__)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="command", help="onnx or check (--help: options)"
    )
    onnx = commands.add_parser("onnx", help="best.pth -> model.onnx", prog="camvidseg export onnx")
    onnx.add_argument("--model", required=True, type=Path, help="best.pth from training")
    onnx.add_argument("--palette", required=True, type=Path, help="palette.json (class names)")
    onnx.add_argument("--out", required=True, type=Path, help="model.onnx to write")
    check = commands.add_parser(
        "check", help="onnxruntime vs PyTorch on a split; cost", prog="camvidseg export check"
    )
    command.add_trained_model(check, default="val", help="the images to compare on")
    check.add_argument(
        "--threads", type=positive_int, default=os.cpu_count() or 1, help="CPU threads"
    )
    check.add_argument("--budget", type=float, default=10.0, help="seconds per timing, at most")
    paths = {"--onnx": "model.onnx from export onnx", "--out": "export_check.json to write",
             "--out-cost": "cost.json to write"}  # fmt: skip
    command.add_paths(check, paths)
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "onnx":
        made = Record(__file__, args, [args.model, args.palette], [args.out])
        run_export(args)
        made.write()
    else:
        made = Record(
            __file__,
            args,
            [args.model, args.onnx, args.prepared, args.palette],
            [args.out, args.out_cost],
        )
        run_check(args)
        made.write()


if __name__ == "__main__":
    main()
