"""Benchmark: training throughput against two baselines measured in the same run.

``--against original`` (default): img/s and peak memory, the original example vs this project's
step, each in its own process:
  baseline: the original example's setup: per-color-loop dataset in the loop (num_workers=0),
            Normalize in the loader, NCHW, fp16 autocast + GradScaler on CUDA (its AmpOptimWrapper);
  project:  SegmentationDataset over converted masks, loader workers with pinned memory, uint8
            batches normalised on the device, channels_last and bf16 AmpOptimWrapper on CUDA,
            cudnn.benchmark, through MMEngine's ``train_step``.
  On CUDA also how busy the GPU was: the share of the window from the first to the last kernel of
  the profiled steps during which a kernel ran.

``--against plain`` (CPU): seconds per iteration, a plain PyTorch loop vs this project's whole train
stage (``camvidseg train``: Runner, data path, preprocessor, hooks, logging, optimizer wrapper):
  plain: memmap crop -> normalise -> forward/backward/AdamW step, nothing else;
  stage: the median of MMEngine's per-iteration ``time`` of a real training run, no rescaling.
  Both in fresh processes with the same model, data, batch, crop and threads, alternating order
  over ``--repeats`` rounds; the first ``--warmup`` iterations of each run are left out. CPU
  seconds per iteration are reported beside wall seconds: they barely move with other work on a
  shared machine.

Usage: python benchmarks/train_throughput.py --model lraspp_mobilenet_v3_large --size 96 128
       python benchmarks/train_throughput.py --model deeplabv3_resnet50 --size 720 960  (GPU)
       python benchmarks/train_throughput.py --against plain --batch 4 --size 240 320 \\
           --data ../shared/data/camvid-segnet-subset --threads 2 --iters 20 --repeats 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from camvid_like import prepared_folder, prepared_set  # also puts src/ on the path
from original_example import original_dataset

from camvidseg import IGNORE_INDEX
from camvidseg.core.fileio import read_json, write_json
from camvidseg.data.dataset import RandomScaleCropFlip, SegmentationDataset
from camvidseg.training.model import SegmentationModel
from camvidseg.training.networks import IMAGENET_MEAN, IMAGENET_STD
from camvidseg.training.segmenter import build_network


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
    model = SegmentationModel(model_name, num_classes, aux_loss_weight=0, channels_last=True)
    model = model.to(device=device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported(False) else torch.float16
        wrapper = AmpOptimWrapper(optimizer=optimizer, dtype=dtype)
    else:
        wrapper = OptimWrapper(optimizer=optimizer)
    model.train()
    return lambda: model.train_step(next(loader), wrapper)


def busy_share(spans: list[tuple[float, float]]) -> float:
    """Share of the window from the first span's start to the last span's end covered by at least
    one span (kernels may overlap on several streams; each moment counts once)."""
    spans = sorted(spans)
    busy, (start, end) = 0.0, spans[0]
    window_start = start
    for s, e in spans[1:]:
        if s > end:
            busy += end - start
            start, end = s, e
        else:
            end = max(end, e)
    busy += end - start
    return busy / (end - window_start) if end > window_start else 1.0


def gpu_busy_share(step, iters: int) -> float:
    """Kernels only (copies and memsets run on other engines), timed by the profiler on the GPU;
    the window is first kernel to last kernel, so the profiler's own start and stop stay out."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
    spans = [
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset"))
    ]
    return busy_share(spans)


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


class IterationClock:
    """Wall and CPU (process, all threads) seconds between ticks. CPU time barely moves with
    other work on a shared machine, so it backs the wall-clock figures measured there."""

    def __init__(self):
        self.marks = [(time.perf_counter(), time.process_time())]

    def tick(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def seconds(self, skip: int, count: int) -> dict[str, list[float]]:
        steps = list(itertools.pairwise(self.marks))[skip : skip + count]
        return {"wall": [b[0] - a[0] for a, b in steps], "cpu": [b[1] - a[1] for a, b in steps]}


def plain_loop(args) -> dict[str, list[float]]:
    """Seconds per iteration of the plain loop: random crops straight from the convert stage's
    memory-mapped uint8 cache, normalised, then forward/backward/AdamW. HWC crops are permuted
    into an NCHW view, as a loop over HWC images naturally does (channels_last strides)."""
    index = read_json(args.prepared / "index.json")
    images, masks = (np.load(args.prepared / index["cache"]["train"][k], mmap_mode="r")
                     for k in ("images", "masks"))  # fmt: skip
    num_classes = len(read_json(args.prepared.parent / "palette.json")["classes"])
    net = build_network(args.model, num_classes, aux_loss=False).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-4, weight_decay=1e-4)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    rng = np.random.default_rng(0)
    (h, w), (height, width) = args.size, images.shape[1:3]
    order = iter(())
    clock = IterationClock()
    for _ in range(args.warmup + args.iters):
        picks = [next(order, None) for _ in range(args.batch)]
        if None in picks:
            order = iter(rng.permutation(len(images)))
            picks = [next(order) for _ in range(args.batch)]
        tops = rng.integers(height - h + 1, size=len(picks))
        lefts = rng.integers(width - w + 1, size=len(picks))
        spans = zip(picks, tops, lefts, strict=True)
        crops = [(i, slice(t, t + h), slice(e, e + w)) for i, t, e in spans]
        x, y = np.stack([images[c] for c in crops]), np.stack([masks[c] for c in crops])
        inputs = (torch.from_numpy(x).permute(0, 3, 1, 2).float() - mean) / std
        loss = F.cross_entropy(net(inputs)["out"], torch.from_numpy(y).long(),
                               ignore_index=IGNORE_INDEX)  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        clock.tick()
    return clock.seconds(args.warmup, args.iters)


def stage_loop(args) -> dict[str, list[float]]:
    """MMEngine's per-iteration ``time`` of a real run of the train stage (in this process, so
    the Runner's message hub can be read afterwards; it keeps every iteration's value), and the
    CPU seconds between the same two points (IterTimerHook's end of each training iteration)."""
    from mmengine.hooks import IterTimerHook
    from mmengine.logging import MessageHub

    from camvidseg.training import train

    per_epoch = len(read_json(args.prepared / "index.json")["splits"]["train"]) // args.batch
    epochs = math.ceil((args.warmup + args.iters) / per_epoch)
    settings = {
        "model": {"name": args.model, "backbone_weights": "none", "aux_loss_weight": 0},
        "train": {"device": "cpu", "epochs": epochs, "batch_size": args.batch,
                  "crop_size": list(args.size), "scale_range": [1.0, 1.0],
                  "val_interval": epochs, "log_interval": per_epoch},
    }  # fmt: skip
    clock, after_iter = IterationClock(), IterTimerHook._after_iter

    def timed_after_iter(self, runner, *rest, mode="train", **kwargs):
        after_iter(self, runner, *rest, mode=mode, **kwargs)
        if mode == "train":
            clock.tick()

    IterTimerHook._after_iter = timed_after_iter
    with tempfile.TemporaryDirectory() as out:  # a fresh work dir: nothing to resume from
        paths = {"--prepared": args.prepared, "--palette": args.prepared.parent / "palette.json",
                 "--work-root": f"{out}/work", "--out-model": f"{out}/best.pth",
                 "--out-history": f"{out}/history.json"}  # fmt: skip
        flags = {"--settings": json.dumps(settings), "--backbone-weights": "none",
                 "--num-workers": args.workers, "--threads": args.threads} | paths  # fmt: skip
        train.main([str(part) for pair in flags.items() for part in pair])
    times = MessageHub.get_current_instance().get_scalar("train/time").data[0]
    # The clock's first step (Runner start-up included) is iteration 1, as the hub's first value.
    wall = [float(t) for t in times[args.warmup : args.warmup + args.iters]]
    return {"wall": wall, "cpu": clock.seconds(args.warmup, args.iters)["cpu"]}


def in_child(args, which: str, extra: list[str] = ()) -> dict | list:
    """Run one variant in a fresh process (own memory peak, own threads); its last line is JSON."""
    out = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], *extra, "--only", which],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.exit(f"error: {which} run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def against_plain(args, results: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.data:
            _, palette, prepared, _ = prepared_folder(tmp, args.data.resolve(), args.threads)
        else:
            sizes = {"train": args.images, "val": 2, "test": 1}
            _, palette, prepared, _ = prepared_set(tmp, sizes, 2 * args.size[0], 2 * args.size[1])
        write_json(tmp / "palette.json", palette)
        runs = {"plain": [], "stage": []}
        for round_no in range(args.repeats):
            order = ["plain", "stage"] if round_no % 2 == 0 else ["stage", "plain"]
            for which in order:
                runs[which].append(in_child(args, which, ["--prepared", str(prepared)]))
                wall, cpu = (statistics.median(runs[which][-1][k]) for k in ("wall", "cpu"))
                print(f"round {round_no + 1} {which}: median {wall:.3f} s/iter ({cpu:.3f} CPU s)",
                      flush=True)  # fmt: skip
    for clock in ("wall", "cpu"):
        suffix = "" if clock == "wall" else "_cpu"
        for which, per_round in runs.items():
            medians = [statistics.median(r[clock]) for r in per_round]
            results[f"{which}{suffix}_s_per_iter_by_round"] = medians
            pooled = [t for r in per_round for t in r[clock]]
            results[f"{which}{suffix}_s_per_iter"] = statistics.median(pooled)
        results[f"ratio{suffix}"] = (results[f"stage{suffix}_s_per_iter"]
                                     / results[f"plain{suffix}_s_per_iter"])  # fmt: skip
    by_round = zip(results["stage_s_per_iter_by_round"], results["plain_s_per_iter_by_round"],
                   strict=True)  # fmt: skip
    results["ratio_by_round"] = [stage / plain for stage, plain in by_round]


def against_original(args, results: dict) -> None:
    for which in ("baseline", "project"):
        for key, value in in_child(args, which).items():
            results[f"{which}_{key}"] = value
    results["speedup"] = results["project_img_per_s"] / results["baseline_img_per_s"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", choices=["original", "plain"], default="original")
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=24, help="generated training images")
    parser.add_argument("--data", type=Path, help="real CamVid/SegNet folder (--against plain)")
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="rounds (--against plain)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--workers",
        type=int,
        help="project loader workers (default as the train rule: 0 on the CPU, 4 on CUDA)",
    )
    parser.add_argument("--only", choices=["baseline", "project", "plain", "stage"],
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.workers is None:
        args.workers = 4 if torch.cuda.is_available() else 0
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.only:  # one variant per process
        run = {"plain": plain_loop, "stage": stage_loop}.get(args.only)
        print(json.dumps(run(args) if run else run_one(args, args.only)))
        return
    results = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "against": args.against,
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "iters": args.iters,
        "threads": args.threads,
    }
    if args.against == "plain":
        results |= {"data": str(args.data or "generated"), "repeats": args.repeats}
        against_plain(args, results)
    else:
        against_original(args, results)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
