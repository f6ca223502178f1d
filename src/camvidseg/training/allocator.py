"""Host memory a training process keeps between steps instead of returning it to the OS.

A training step allocates and frees the same tensors every iteration. glibc's defaults hand the
freed top of the heap back to the kernel (and mmap large blocks afresh), so the next step faults
the same pages in again and the kernel zeroes them: measured on the CPU train stage
(lraspp_mobilenet_v3_large, batch 4, 240x320, 2 threads) ~60,000 minor page faults and ~0.13 s of
system time per iteration, 10-15 % of the step. Fixed thresholds keep the memory in the process
until it exits; the peak grows a little (max RSS 1.37 -> 1.45 GB in that run: blocks that glibc
would have mapped one by one now share the heap).
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's limit on 64-bit: blocks above it are always mmapped
_TRIM_THRESHOLD = 2**31 - 1  # the largest mallopt takes: the heap's free top stays


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process; False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except AttributeError:  # not glibc (macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    set_mmap = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    return bool(set_mmap and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
