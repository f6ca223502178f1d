"""Where the network runs and in what precision: one policy for train, evaluate, visualize, predict.

``auto`` takes CUDA when torch can use it, else the CPU. ``cuda`` where torch cannot use it is
refused in one line that says why, as far as torch and the driver can tell; nothing falls back to
the CPU silently. ``cpu`` hides the GPUs before CUDA initialises, so MMEngine (which picks CUDA
whenever it can) stays on the CPU too.

Mixed precision is bf16 where the GPU computes it in hardware (``including_emulation=False``: a T4
would otherwise get emulated bf16 and slow non-cuDNN convolutions), else fp16; the CPU runs fp32.
Training's validation and the evaluate stage use the same precision (the one recorded in the model
file), so one checkpoint gets one score.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

import torch

from .errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(requested: str, key: str) -> str:
    """``auto``/``cuda``/``cpu`` -> ``cuda`` or ``cpu``; ``key`` names the setting in errors."""
    if requested == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise UserError(
            f"{key}: cuda, but CUDA is unavailable: {cuda_unavailable_reason()} (set {key} to cpu)"
        )
    return "cpu"


def require_gpus(count: int, device: str, key: str) -> None:
    """Refuse more processes than visible GPUs (else: "invalid device ordinal" deep in DDP)."""
    visible = torch.cuda.device_count() if device == "cuda" else count
    if count > visible:
        mask = os.environ.get("CUDA_VISIBLE_DEVICES")
        shown = f" (CUDA_VISIBLE_DEVICES={mask!r})" if mask is not None else ""
        raise UserError(f"{key}: {count}, but only {visible} GPU(s) are visible{shown}")


def cuda_unavailable_reason() -> str:
    """Why ``torch.cuda.is_available()`` is False, from the most to the least specific cause."""
    if torch.version.cuda is None:
        return "this torch is a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    driver = driver_cuda_version()
    if driver is None:
        return "no NVIDIA driver found (libcuda.so.1 cannot be loaded)"
    built = int(torch.version.cuda.split(".")[0])
    if driver[0] < built:
        return (
            f"the NVIDIA driver supports CUDA up to {driver[0]}.{driver[1]}, but this torch wheel "
            f"is a CUDA {torch.version.cuda} build: update the driver"
        )
    return driver_init_error() or "torch finds no usable GPU (torch.cuda.is_available() is False)"


def driver_cuda_version() -> tuple[int, int] | None:
    """(major, minor) CUDA version the installed driver supports; None without a driver."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    if driver.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value // 1000, version.value % 1000 // 10


def driver_init_error() -> str | None:
    """The driver's own words when it cannot initialise (e.g. no CUDA-capable device)."""
    driver = ctypes.CDLL("libcuda.so.1")
    status = driver.cuInit(0)
    if status == 0:
        return None
    text = ctypes.c_char_p()
    driver.cuGetErrorString(status, ctypes.byref(text))
    return f"the CUDA driver says: {(text.value or b'error %d' % status).decode()}"


def use_deterministic_kernels() -> None:
    """``train.deterministic``: deterministic cuDNN and cuBLAS kernels, no cuDNN benchmarking.

    Only warnings (``warn_only``) for the ops torch has no deterministic CUDA kernel for, which
    every model here uses: adaptive average pooling's and bilinear upsampling's backward and the
    NLL loss; with an error instead, no model could train in this mode at all.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def precision(device: str, amp: bool) -> str:
    """``bf16``/``fp16`` for mixed precision on CUDA (bf16 only where the hardware has it), else
    ``fp32``."""
    if device != "cuda" or not amp:
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def autocast(device: str, precision: str):
    """The autocast context of ``precision`` (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=DTYPES[precision])
