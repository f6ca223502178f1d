"""The benchmarks' own arithmetic."""

import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from train_throughput import busy_share


def test_busy_share_window_is_first_to_last_kernel():
    # Kernels back to back from t=100 to t=400: fully busy, however long the profiler ran around
    # them (the old measure divided by the profiled wall time, start-up and shutdown included).
    assert busy_share([(100, 200), (200, 300), (300, 400)]) == 1.0
    # A 100 us gap (data loading between steps) in a 400 us window: 75 % busy.
    assert busy_share([(300, 400), (0, 100), (100, 200)]) == pytest.approx(0.75)


def test_busy_share_counts_overlapping_kernels_once():
    # Two streams: (0, 100) and (50, 150) overlap; busy 150 of the 200 us window.
    assert busy_share([(0, 100), (50, 150), (175, 200)]) == pytest.approx(175 / 200)
    assert busy_share([(0, 100), (10, 20)]) == 1.0  # a kernel inside another
