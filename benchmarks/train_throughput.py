"""Benchmark: training throughput (img/s) and peak memory, original example vs this project.

Both run N training iterations of the same torchvision model at the same image size, in one
process, one after the other:
  baseline: the original example's setup: per-color-loop dataset in the loop (num_workers=0),
            Normalize in the loader, NCHW, fp16 autocast + GradScaler on CUDA (its AmpOptimWrapper);
  project:  SegmentationDataset over converted masks, loader workers with pinned memory, uint8
            batches normalised on the device, channels_last and bf16 AmpOptimWrapper on CUDA,
            cudnn.benchmark, through MMEngine's ``train_step``.
On CUDA it also reports how busy the GPU was (share of wall time in CUDA kernels, profiler).
Usage: python benchmarks/train_throughput.py --model lraspp_mobilenet_v3_large --size 96 128
       python benchmarks/train_throughput.py --model deeplabv3_resnet50 --size 720 960  (GPU)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from camvid_like import prepared_set  # also puts src/ on the path
from original_example import original_dataset

from camvidseg.dataset import RandomScaleCropFlip, SegmentationDataset
from camvidseg.model import SegmentationModel, build_network


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(loop, iters: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        loop()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):
        loop()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def endless(loader):
    while True:
        yield from loader


def baseline_step_fn(root, model_name, num_classes, batch, device):
    dataset = original_dataset(root, "train")
    loader = endless(
        torch.utils.data.DataLoader(
            dataset, batch_size=batch, shuffle=True, num_workers=0, drop_last=True
        )
    )
    net = build_network(model_name, num_classes, aux_loss=False).to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-4)
    scaler = torch.amp.GradScaler(enabled=device == "cuda")

    def step():
        images, samples = next(loader)
        images, labels = images.to(device), samples["labels"].to(device)
        with torch.autocast(device, dtype=torch.float16, enabled=device == "cuda"):
            loss = F.cross_entropy(net(images)["out"], labels)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def project_step_fn(prepared, model_name, num_classes, batch, size, workers, device):
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    dataset = SegmentationDataset(prepared, "train", RandomScaleCropFlip(size, (1.0, 1.0)))
    loader = endless(
        torch.utils.data.DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            pin_memory=device == "cuda",
            persistent_workers=workers > 0,
        )
    )
    model = SegmentationModel(
        model_name, num_classes, aux_loss_weight=0, channels_last=device == "cuda"
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        wrapper = AmpOptimWrapper(optimizer=optimizer, dtype=dtype)
    else:
        wrapper = OptimWrapper(optimizer=optimizer)
    model.train()
    return lambda: model.train_step(next(loader), wrapper)


def gpu_busy_share(step, iters: int) -> float:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
    wall_us = (time.perf_counter() - start) * 1e6
    kernel_us = sum(
        e.device_time_total
        for e in prof.key_averages()
        if e.device_time_total > 0 and e.device_type.name == "CUDA"
    )
    return min(kernel_us / wall_us, 1.0)


def run_one(args, which: str) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = {"train": args.images, "val": 1, "test": 1}
        manifest, palette, prep, _ = prepared_set(Path(tmp), sizes, *args.size)
        k = len(palette["classes"])
        if which == "baseline":
            step = baseline_step_fn(manifest["root"], args.model, k, args.batch, device)
        else:
            step = project_step_fn(
                prep, args.model, k, args.batch, tuple(args.size), args.workers, device
            )
        seconds = timed(step, args.iters, args.warmup, device)
        result = {"img_per_s": args.iters * args.batch / seconds, "peak_mb": peak_memory_mb(device)}
        if device == "cuda":
            result["gpu_busy"] = gpu_busy_share(step, max(args.iters // 2, 3))
    return result


def main() -> None:
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        help="project loader workers (default as the train rule: 0 on the CPU, 4 on CUDA)",
    )
    parser.add_argument("--only", choices=["baseline", "project"], help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.workers is None:
        args.workers = 4 if torch.cuda.is_available() else 0
    if args.only:  # one variant per process, so peak memory is its own
        print(json.dumps(run_one(args, args.only)))
        return
    results = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "iters": args.iters,
    }
    for which in ("baseline", "project"):
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--only", which],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for key, value in json.loads(out.strip().splitlines()[-1]).items():
            results[f"{which}_{key}"] = value
    results["speedup"] = results["project_img_per_s"] / results["baseline_img_per_s"]
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
