import os
import subprocess
import sys

from conftest import REPO

PROBE = """
import sys
import camvidseg.training.segmenter as segmenter
print("dynamo after import:", "torch._dynamo" in sys.modules, "torch._dynamo.utils" in sys.modules)
net = segmenter.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                            num_classes=3).eval()
import torch
with torch.no_grad():
    print("logits:", tuple(net(torch.zeros(1, 3, 32, 48))["out"].shape))
print("dynamo after a forward:", "torch._dynamo" in sys.modules)
deferred = sys.modules["torchvision.ops.roi_align"].is_compile_supported
print("deferred answers:", deferred("cpu"), deferred("meta"))
import torch._dynamo.utils as real
print("real module:", real.__file__.endswith("_dynamo/utils.py"), real.is_compile_supported("meta"))
"""


def probe(code: str) -> subprocess.CompletedProcess:
    """``code`` run by a fresh interpreter on this checkout's package."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_networks_build_without_torch_compiler_and_the_deferred_helper_answers_as_the_real():
    result = probe(PROBE)
    assert result.stdout.splitlines() == [
        "dynamo after import: False False",
        "logits: (1, 3, 32, 48)",
        "dynamo after a forward: False",
        "deferred answers: True False",
        "real module: True False",
    ], result.stderr


UNKNOWN_NAME = """
import sys
import torch
from camvidseg.training import torchvision_import as tvi
stand_in = tvi.stand_in()
sys.modules[tvi.DEFERRED] = stand_in
print("file:", hasattr(stand_in, "__file__"), "torch._dynamo" in sys.modules)  # inspect asks this
counters = stand_in.counters  # a name it does not know: it withdraws, the real module answers
import torch._dynamo.utils as real
print("real:", counters is real.counters, sys.modules[tvi.DEFERRED] is real)
"""


def test_a_name_the_stand_in_does_not_know_comes_from_the_real_module():
    result = probe(UNKNOWN_NAME)
    assert result.stdout.splitlines() == ["file: False False", "real: True True"], result.stderr


INFERENCE_PROBE = """
import sys
import torch
from camvidseg.evaluation.inference import predict_batch
from camvidseg.training.segmenter import Segmenter, load_trained
torch.save({"meta": {"model": "lraspp_mobilenet_v3_large", "num_classes": 3, "aux_loss_weight": 0,
                     "precision": "fp32"},
            "state_dict": Segmenter("lraspp_mobilenet_v3_large", 3, aux_loss=False).state_dict()},
           sys.argv[1])
model, meta = load_trained(__import__("pathlib").Path(sys.argv[1]))
image = torch.zeros(1, 3, 32, 48, dtype=torch.uint8)
print("prediction:", tuple(predict_batch(model, image, "cpu").shape))
heavy = ("mmengine", "torch.distributed.fsdp", "sympy")
print("loaded:", sorted(m for m in heavy if m in sys.modules))
"""


def test_inference_loads_a_trained_model_without_mmengine_and_its_distributed_stack(tmp_path):
    # MMEngine's model package imports torch's FSDP, DTensor and sympy: ~1 s of CPU that each
    # evaluate, visualize, predict and export process would pay for nothing.
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", INFERENCE_PROBE, str(tmp_path / "best.pth")],
                            capture_output=True, text=True, env=env)  # fmt: skip
    assert result.stdout.splitlines() == ["prediction: (1, 32, 48)", "loaded: []"], result.stderr
