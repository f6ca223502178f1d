"""One precision per checkpoint (issue 20, item 6): best.pth records the precision its validation
ran in; evaluate, visualize, predict and export run in exactly that one on any device and say so;
a file that records none is refused; the model card reads it."""

import json

import numpy as np
import onnx
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from PIL import Image

from camvidseg.core import settings

CLASSES = ["a", "b", "c"]
LINE = "precision: bf16, as best.pth records for its validation"


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A model file as a GPU run exports it (validated in bf16), a prepared val split of 3
    images, their palette, and a folder of images to predict."""
    from camvidseg.training.model import SegmentationModel

    root = tmp_path_factory.mktemp("bf16")
    torch.manual_seed(0)
    model = SegmentationModel("lraspp_mobilenet_v3_large", len(CLASSES), 0.0)
    meta = {"model": "lraspp_mobilenet_v3_large", "num_classes": 3, "classes": CLASSES,
            "aux_loss_weight": 0.0, "precision": "bf16", "epoch": 2}  # fmt: skip
    torch.save({"meta": meta, "state_dict": model.state_dict()}, root / "best.pth")
    rng = np.random.default_rng(0)
    (root / "prepared/val").mkdir(parents=True)
    (root / "images").mkdir()
    items = []
    for i in range(3):
        image = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / f"prepared/val/{i}.png")
        Image.fromarray(image).save(root / f"images/{i}.png")
        mask = rng.integers(0, len(CLASSES), (32, 48), dtype=np.uint8)
        Image.fromarray(mask).save(root / f"prepared/val/{i}_mask.png")
        items.append({"stem": str(i), "image": f"val/{i}.png", "mask": f"val/{i}_mask.png"})
    (root / "prepared/index.json").write_text(json.dumps({"splits": {"val": items}}))
    palette = [{"id": i, "name": n, "color": [80 * i, 0, 0]} for i, n in enumerate(CLASSES)]
    (root / "palette.json").write_text(json.dumps({"classes": palette}))
    return root


def common(run, *flags):
    return ["--model", run / "best.pth", "--palette", run / "palette.json", "--device", "cpu",
            *flags]  # fmt: skip


def test_loading_keeps_the_recorded_precision_on_the_cpu(bf16_run):
    from camvidseg.evaluation.inference import predict_batch
    from camvidseg.training.segmenter import load_trained

    model, meta = load_trained(bf16_run / "best.pth", "cpu")
    assert model.precision == meta["precision"] == "bf16"  # no longer fp32 "because CPU"
    dtypes = []
    model.net.classifier.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    predict_batch(model, torch.zeros(1, 3, 32, 48, dtype=torch.uint8), "cpu")
    assert dtypes == [torch.bfloat16]


def test_evaluate_scores_in_the_recorded_precision_and_says_so(bf16_run, tmp_path):
    out = tmp_path / "val.json"
    flags = ["--prepared", bf16_run / "prepared", "--split", "val", "--out-json", out,
             "--out-csv", tmp_path / "v.csv"]  # fmt: skip
    result = run_cli("evaluate", *common(bf16_run, *flags))
    assert LINE in result.stdout
    assert json.loads(out.read_text())["precision"] == "bf16"


def test_visualize_and_predict_say_the_precision_they_run_in(bf16_run, tmp_path):
    result = run_cli("visualize", *common(bf16_run, "--prepared", bf16_run / "prepared",
                     "--splits", "val", "--out", tmp_path / "vis"))  # fmt: skip
    assert LINE in result.stdout
    result = run_cli("predict", *common(bf16_run, "--input-dir", bf16_run / "images",
                     "--out", tmp_path / "pred"))  # fmt: skip
    assert LINE in result.stdout and len(list((tmp_path / "pred").glob("*_mask.png"))) == 3


def test_a_model_file_without_its_precision_is_refused(bf16_run, tmp_path):
    checkpoint = torch.load(bf16_run / "best.pth", weights_only=True)
    del checkpoint["meta"]["precision"]
    torch.save(checkpoint, tmp_path / "best.pth")
    (tmp_path / "palette.json").write_text((bf16_run / "palette.json").read_text())
    result = run_cli("predict", *common(tmp_path, "--input-dir", bf16_run / "images",
                     "--out", tmp_path / "pred"), check=False)  # fmt: skip
    assert_one_line_error(result, "best.pth: records no precision of its validation")
    assert not (tmp_path / "pred").exists()


def test_export_names_the_precision_and_checks_parity_in_the_graphs(bf16_run, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    result = run_cli("export", "onnx", "--model", bf16_run / "best.pth",
                     "--palette", bf16_run / "palette.json", "--out", onnx_path)  # fmt: skip
    assert f"{LINE}; model.onnx computes in fp32" in result.stdout
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert props["precision"] == "fp32" and props["validation_precision"] == "bf16"
    check, cost = tmp_path / "check.json", tmp_path / "cost.json"
    result = run_cli("export", "check", *common(bf16_run, "--prepared", bf16_run / "prepared",
                     "--split", "val", "--onnx", onnx_path, "--out", check, "--out-cost", cost,
                     "--threads", "1", "--budget", "0.2"))  # fmt: skip
    assert f"{LINE}; parity checked in fp32, the graph's" in result.stdout
    summary = json.loads(check.read_text())
    assert summary["passed"] and summary["argmax_agreement"] >= 0.999  # fp32 against fp32
    assert summary["checkpoint_precision"] == "bf16"
    evaluated = tmp_path / "val.json"
    run_cli("evaluate", *common(bf16_run, "--prepared", bf16_run / "prepared", "--split", "val",
            "--out-json", evaluated, "--out-csv", tmp_path / "v.csv"))  # fmt: skip
    # The export check's score in the checkpoint's precision is evaluate's score.
    assert summary["mIoU_torch_checkpoint_precision"] == json.loads(evaluated.read_text())["mIoU"]


def test_the_model_card_reads_the_precision(bf16_run):
    from camvidseg.deploy.card import limits, recipe_rows, table

    def recipe_section(run):
        return table(["", ""], recipe_rows(run))

    def limits_section(run):
        return "\n".join(limits(run))

    run = {
        "settings": {"train": settings.resolve("train", {"device": "cuda"}),
                     "model": settings.resolve("model", {}), "dataset": {"source": "local"}},
        "history": {"val": [{"epoch": 1, "mIoU": 0.5}]},
        "meta": {"precision": "bf16"},
        "metrics": [{"split": "val", "per_class": [
            {"class": c, "IoU": 0.5, "gt_pixels": 10} for c in CLASSES]}],
        "manifest": {"sizes": {"train": 3}},
        "cost": {"resolution": [32, 48]},
    }  # fmt: skip
    assert "| precision | bf16 autocast: training's validation and every score below" in (
        recipe_section(run)
    )
    assert "Scores are computed in bf16, the precision the model file records" in (
        limits_section(run)
    )
    run["meta"]["precision"] = "fp32"
    assert "| precision | fp32: training's validation" in recipe_section(run)
