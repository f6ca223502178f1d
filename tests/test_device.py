"""One device policy for every stage (device.py): auto/cuda/cpu, why CUDA is unavailable, the AMP
dtype from the hardware's bf16 answer, one precision for validation and evaluation. The CUDA side
is exercised on the CPU by patching torch's and the driver's answers."""

import ctypes

import pytest
import torch
from conftest import assert_one_line_error, run_cli

from camvidseg.core import device
from camvidseg.core.errors import UserError


class FakeDriver:
    """Stands in for libcuda.so.1: the driver's CUDA version and its cuInit answer."""

    def __init__(self, version=13000, init_status=0, message=b""):
        self.version, self.init_status, self.message = version, init_status, message

    def cuDriverGetVersion(self, pointer):
        pointer._obj.value = self.version
        return 0

    def cuInit(self, flags):
        return self.init_status

    def cuGetErrorString(self, status, pointer):
        pointer._obj.value = self.message
        return 0


@pytest.fixture
def no_cuda(monkeypatch):
    """torch sees no GPU; the test says why (GPUs not hidden, a CUDA 13 build of torch)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return monkeypatch


def refusal(key="train.device") -> str:
    with pytest.raises(UserError) as caught:
        device.resolve("cuda", key)
    return str(caught.value)


def test_auto_and_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.resolve("auto", "train.device") == "cuda"
    assert device.resolve("cuda", "train.device") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.resolve("auto", "train.device") == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert device.resolve("cpu", "train.device") == "cpu"
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # so MMEngine, too, stays on the CPU


def test_cuda_refused_with_the_reason(no_cuda):
    no_cuda.setattr(ctypes, "CDLL", lambda name: FakeDriver(version=12040))
    assert refusal() == (
        "train.device: cuda, but CUDA is unavailable: the NVIDIA driver supports CUDA up to 12.4, "
        "but this torch wheel is a CUDA 13.0 build: update the driver (set train.device to cpu)"
    )
    no_cuda.setattr(ctypes, "CDLL", lambda name: FakeDriver(13000, 100, b"no CUDA-capable device"))
    assert refusal("--device") == (
        "--device: cuda, but CUDA is unavailable: the CUDA driver says: no CUDA-capable device "
        "(set --device to cpu)"
    )

    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    no_cuda.setattr(ctypes, "CDLL", no_library)
    assert "no NVIDIA driver found (libcuda.so.1 cannot be loaded)" in refusal()
    no_cuda.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert "CUDA_VISIBLE_DEVICES='-1' hides every GPU" in refusal()
    no_cuda.setattr(torch.version, "cuda", None)
    assert "this torch is a CPU-only build" in refusal()


def test_more_processes_than_gpus_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(UserError, match=r"^train.gpus: 2, but only 1 GPU\(s\) are visible "
                       r"\(CUDA_VISIBLE_DEVICES='3'\)$"):  # fmt: skip
        device.require_gpus(2, "cuda", "train.gpus")
    device.require_gpus(1, "cuda", "train.gpus")
    device.require_gpus(4, "cpu", "train.gpus")  # gloo processes on the CPU


@pytest.mark.parametrize("stage", ["evaluate", "visualize", "predict"])
def test_inference_stages_refuse_cuda_instead_of_falling_back(stage, tiny_run, tmp_path):
    data = tiny_run / "results/data"
    common = ["--model", tiny_run / "results/model/best.pth", "--palette", data / "palette.json",
              "--device", "cuda"]  # fmt: skip
    flags = {
        "evaluate": ["--prepared", data / "prepared", "--split", "val",
                     "--out-json", tmp_path / "m.json", "--out-csv", tmp_path / "m.csv"],
        "visualize": ["--prepared", data / "prepared", "--out", tmp_path / "vis"],
        "predict": ["--input-dir", tiny_run / "results/vis_data", "--out", tmp_path / "pred"],
    }  # fmt: skip
    result = run_cli(stage, *common, *flags[stage], check=False, env={"CUDA_VISIBLE_DEVICES": ""})
    assert_one_line_error(
        result,
        "--device: cuda, but CUDA is unavailable: CUDA_VISIBLE_DEVICES='' hides every GPU",
    )
    assert list(tmp_path.iterdir()) == []


def test_amp_dtype_is_the_hardware_answer(monkeypatch):
    asked = []

    def t4(including_emulation=True):  # sm_75: bf16 only by emulation
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", t4)
    assert device.precision("cuda", amp=True) == "fp16"
    assert asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert device.precision("cuda", amp=True) == "bf16"
    assert device.precision("cuda", amp=False) == "fp32"
    assert device.precision("cpu", amp=True) == "fp32"


def test_validation_and_inference_share_the_model_precision():
    """Training's validation (``val_step``) and the evaluate stage (``predict_batch``, on the
    MMEngine-free ``Segmenter`` that loads the same state dict) both run in the model's
    ``precision``; on the CPU bf16 autocast exists, so the test can see the dtype."""
    from camvidseg.evaluation.inference import predict_batch
    from camvidseg.training.model import SegmentationModel
    from camvidseg.training.segmenter import Segmenter

    model = SegmentationModel("lraspp_mobilenet_v3_large", 4, 0.4).eval()
    segmenter = Segmenter("lraspp_mobilenet_v3_large", 4, aux_loss=False).eval()
    segmenter.load_state_dict(model.state_dict())
    seen = []
    for network in (model.net, segmenter.net):
        network.classifier.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    images = torch.zeros(1, 3, 32, 48, dtype=torch.uint8)
    batch = {"inputs": images, "data_samples": {"labels": torch.zeros(1, 32, 48)}}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model.precision = segmenter.precision = precision
        seen.clear()
        model.val_step(batch)
        predict_batch(segmenter, images, "cpu")
        assert seen == [dtype, dtype]
