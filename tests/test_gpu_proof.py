"""The GPU proof's pieces on the CPU (benchmarks/gpu_proof.py, issue 20 item 4): its arithmetic
(MFU against the card's dense bf16 peak, training FLOPs counted forward and backward) and a tiny
``--cpu-smoke`` of every step but the trainer checks (tests/test_train.py covers the SIGUSR1 resume
on the CPU) and compile, writing the JSON shape the GPU run writes."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, segnet_layout

sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_proof import dense_bf16_peak, mfu, train_flops_per_image, with_test_split

from camvidseg.deploy.cost import gflops_per_image
from camvidseg.training.model import SegmentationModel


def test_mfu_divides_by_the_cards_dense_bf16_peak():
    assert dense_bf16_peak("NVIDIA H200") == 989.4e12
    assert dense_bf16_peak("NVIDIA H100 80GB HBM3") == 989.4e12
    assert dense_bf16_peak("NVIDIA H100 PCIe") == 756e12  # not the SXM part's figure
    assert dense_bf16_peak("Tesla T4") is None
    # The figure: 2.59 TFLOP per 720x960 image at 61 img/s on an H200 is about 16 %.
    assert mfu(2.59e12, 61.0, dense_bf16_peak("NVIDIA H200")) == pytest.approx(0.16, abs=0.005)
    assert mfu(2.59e12, 61.0, None) is None


def test_training_flops_count_the_backward_pass_too():
    # A ResNet, as the proof measures: torch's counter over-counts the backward of grouped
    # (depthwise) convolutions, so MobileNet figures would not mean much.
    net = SegmentationModel("deeplabv3_resnet50", 3, 0.0).net
    forward = gflops_per_image(net.eval(), 32, 48) * 1e9
    training = train_flops_per_image(net, [32, 48], "cpu")
    # Backward costs about twice the forward (input and weight gradients; the first layer has no
    # input gradient to compute).
    assert 2.5 * forward < training < 3.0 * forward


def test_a_train_and_val_copy_is_read_through_a_view_whose_test_is_its_val(tmp_path):
    data = segnet_layout(tmp_path / "full")
    assert with_test_split(data, tmp_path) == data  # a complete folder is read in place
    for split in ("test", "testannot"):
        for path in (data / split).iterdir():
            path.unlink()
        (data / split).rmdir()
    view = with_test_split(data, tmp_path)
    assert sorted(p.name for p in (view / "test").iterdir()) == sorted(
        p.name for p in (data / "val").iterdir()
    )
    assert (view / "train").resolve() == data / "train"


@pytest.mark.slow
def test_cpu_smoke_runs_the_steps_and_writes_the_proofs_json(tmp_path):
    stems = [f"0001TP_{n:06d}" for n in range(10, 90, 10)]
    data = segnet_layout(tmp_path / "segnet", stems, size=(24, 32))
    steps = ["environment", "prepare", "runner", "original", "original_equal",
             "time_to_accuracy", "evaluate"]  # fmt: skip
    command = [sys.executable, str(REPO / "benchmarks/gpu_proof.py"), "--cpu-smoke",
               "--data", str(data), "--results", str(tmp_path / "results"),
               "--steps", *steps]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OUT": str(tmp_path / "out")}
    (tmp_path / "out").mkdir()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "results/gpu_proof.json").read_text())
    assert report == json.loads((tmp_path / "out/gpu_proof.json").read_text())
    assert report["cpu_smoke"] and report["failed_steps"] == []
    assert report["prepare"]["images"] == {"train": 8, "val": 8, "test": 8}
    for arm, batch in (("runner", 2), ("original", 2), ("original_equal", 2)):
        figures = report[arm]
        assert figures["batch"] == batch and figures["img_per_s"] > 0 and figures["peak_mb"] > 0
        assert figures["flops_per_image"] > 0 and figures["mfu"] is None  # no peak for a CPU
    assert report["runner"]["loader_scale"] == 2.0  # 24x32 images rescaled to the 48x64 crops
    assert not report["original"]["grad_scaler"]  # the CPU runs the shipped loop in fp32
    tta = report["time_to_accuracy"]
    assert [point["epoch"] for point in tta["curve"]] == [1, 2] and tta["train_images"] == 8
    assert tta["recipe"]["model"]["backbone_weights"] == "none"  # from scratch
    assert tta["passed"] == (tta["best_mIoU"] >= 0.55)
    evaluated = report["evaluate"]
    assert evaluated["precision_used"] == evaluated["precision_recorded"] == "fp32"
    assert evaluated["precision_line"] == "precision: fp32, as best.pth records for its validation"
    assert evaluated["passed"] and evaluated["abs_difference"] <= 0.005
