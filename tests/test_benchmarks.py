"""The benchmarks' own arithmetic, and the memory format the training step runs in."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from train_throughput import busy_share

from camvidseg.training.model import SegmentationModel


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


def test_training_step_runs_channels_last_on_the_cpu():
    """oneDNN's convolutions are 10-20 % cheaper on NHWC (measured in benchmarks/)."""
    model = SegmentationModel("lraspp_mobilenet_v3_large", 3, aux_loss_weight=0)
    weights = [p for p in model.net.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    batch = {"inputs": torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "data_samples": {}}
    inputs = model.data_preprocessor(batch)["inputs"]
    assert inputs.dtype == torch.float32
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    assert not inputs.is_contiguous()  # really NHWC in memory, not a 1x1 special case
    expected = (0 - torch.tensor([0.485, 0.456, 0.406]) * 255) / (
        torch.tensor([0.229, 0.224, 0.225]) * 255
    )
    assert torch.allclose(inputs[0, :, 0, 0], expected)


@pytest.mark.slow
def test_plain_loop_comparison_runs_the_real_train_stage(tmp_path):
    """The plain-loop baseline and the train stage both run and report per-iteration seconds
    (a smoke test with tiny sizes: the figures themselves live in benchmarks/results/)."""
    out = tmp_path / "plain.json"
    command = [sys.executable, str(REPO / "benchmarks/train_throughput.py"), "--against", "plain",
               "--size", "32", "48", "--images", "4", "--batch", "2", "--iters", "2",
               "--warmup", "1", "--repeats", "1", "--threads", "1", "--json", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    for which in ("plain", "stage"):
        assert len(result[f"{which}_s_per_iter_by_round"]) == 1
        assert result[f"{which}_s_per_iter"] > 0 and result[f"{which}_cpu_s_per_iter"] > 0
    assert result["ratio"] == result["stage_s_per_iter"] / result["plain_s_per_iter"]
