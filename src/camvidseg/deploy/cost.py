"""What a model costs: parameters, FLOPs per image (PyTorch's own ``torch.utils.flop_counter``)
and measured latency/throughput of PyTorch eager and onnxruntime on the same input.

FLOPs are those ``FlopCounterMode`` counts (convolutions and matrix products, one multiply-add =
2 FLOPs; element-wise ops, pooling and resizing are not counted), for a batch of one image.
Timings are wall-clock per batch-of-one call after a warm-up call, median over the repeats.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from ..core.device import autocast, precision
from .runtime import onnx_logits


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def gflops_per_image(network: torch.nn.Module, height: int, width: int) -> float:
    """GFLOPs of one forward pass of ``network`` (normalised float input) at height x width."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(network.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        network(torch.zeros(1, 3, height, width, device=device))
    return counter.get_total_flops() / 1e9


def time_calls(call, repeats: int, budget_s: float, sync=None) -> dict:
    """Latency (ms, median) and images/s of ``call`` (one image per call): one warm-up call, then
    ``repeats`` timed calls or fewer (at least two) when they would exceed ``budget_s``."""
    call()
    if sync:
        sync()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats and (len(times) < 2 or time.perf_counter() - started < budget_s):
        tick = time.perf_counter()
        call()
        if sync:
            sync()
        times.append(time.perf_counter() - tick)
    latency = statistics.median(times)
    return {"latency_ms": latency * 1e3, "images_per_s": 1.0 / latency, "repeats": len(times)}


def torch_speed(network, image: np.ndarray, device: str, repeats: int, budget_s: float) -> dict:
    """Eager PyTorch on one uint8 RGB image: ``network`` maps a uint8 (N, 3, H, W) batch to
    logits (``export.DeployedNetwork``, the graph that is exported); autocast on CUDA, as
    evaluate runs, fp32 on the CPU."""
    batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
    network = network.to(device).eval()
    sync = torch.cuda.synchronize if device == "cuda" else None
    mixed = precision(device, amp=True)

    def call():
        with torch.inference_mode(), autocast(device, mixed):
            network(batch)

    result = time_calls(call, repeats, budget_s, sync)
    return result | {"precision": mixed}


def onnx_speed(session, image: np.ndarray, repeats: int, budget_s: float) -> dict:
    batch = np.ascontiguousarray(image.transpose(2, 0, 1))[None]
    result = time_calls(lambda: onnx_logits(session, batch), repeats, budget_s)
    return result | {"precision": "fp32", "provider": session.get_providers()[0]}


def speed_ratio(eager: dict, onnx: dict) -> float:
    """onnxruntime images/s over eager images/s (> 1: onnxruntime is faster)."""
    return onnx["images_per_s"] / eager["images_per_s"]
