"""ONNX export and its parity check, the onnx predict backend without torch, cost and speed, and
the model card (issue 13), on the tiny sample trained to non-trivial scores (tests/export.yaml);
the check's arithmetic also fast, on a hand-built ONNX graph."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, jobs_planned, run_cli, snakemake
from PIL import Image

CONFIG = REPO / "tests/export.yaml"

# Run a module or a program with `import torch` (and OpenCV, MMEngine) made to fail, then list
# the third-party top-level modules it loaded.
TORCHLESS = """
import importlib.abc, runpy, sys
BLOCKED = {"torch", "torchvision", "mmengine", "cv2"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
def report():
    names = {m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names)
    print("LOADED", " ".join(sorted(n for n in names if not n.startswith("_"))))
import atexit; atexit.register(report)
kind, target = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
if kind == "module":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(compile(open(target).read(), target, "exec"), {"__name__": "__main__"})
"""
# What the deploy environment holds (requirements-deploy.txt and what those import).
DEPLOY_MODULES = {"camvidseg", "numpy", "onnxruntime", "PIL", "yaml", "rich", "cython_runtime"}


def torchless(kind: str, target, *args, cwd=None):
    env = {"PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-c", TORCHLESS, kind, str(target), *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env={**__import__("os").environ, **env},
    )  # fmt: skip


def loaded_modules(result) -> set[str]:
    line = next(line for line in result.stdout.splitlines() if line.startswith("LOADED"))
    return set(line.split()[1:])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("export_run")
    snakemake(workdir, configfile=CONFIG)
    return workdir


def read(run_dir, name):
    return json.loads((run_dir / "results" / name).read_text())


@pytest.mark.slow
def test_export_is_dynamic_and_the_check_records_parity(run_dir):
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(run_dir / "results/model/model.onnx"))
    assert [o.version for o in proto.opset_import if o.domain == ""] == [18]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = np.zeros((2, 3, 40, 72), np.uint8)
    assert session.run(["logits"], {"image": batch})[0].shape == (2, 31, 40, 72)

    check = read(run_dir, "model/export_check.json")
    val = read(run_dir, "metrics/val.json")
    assert check["passed"] and check["images"] == 2 and check["pixels"] == 2 * 48 * 64
    assert check["argmax_agreement"] >= 0.999 and check["mIoU_abs_diff"] <= 0.001
    assert check["max_abs_logit_diff"] < 1e-3
    assert check["mIoU_torch"] == pytest.approx(val["mIoU"], abs=1e-9)
    assert val["mIoU"] > 0.02  # a model with real scores, not one class everywhere


@pytest.mark.slow
def test_one_perturbed_onnx_weight_fails_the_check_rule_with_one_line(run_dir, tmp_path):
    import onnx
    from onnx import numpy_helper

    work = tmp_path / "run"
    shutil.copytree(run_dir, work, symlinks=True)
    (work / "results/model/export_check.json").unlink()
    onnx_path = work / "results/model/model.onnx"
    proto = onnx.load(str(onnx_path))
    # One value of a classifier bias (shape: classes): that class now wins nearly everywhere.
    bias = next(t for t in proto.graph.initializer if list(t.dims) == [31])
    values = numpy_helper.to_array(bias).copy()
    values[int(values.argmin())] += 1e4
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(proto, str(onnx_path))

    result = snakemake(work, "results/model/export_check.json", configfile=CONFIG, check=False)
    assert result.returncode != 0
    assert "check_export" in result.stdout + result.stderr
    log = (work / "results/logs/check_export.log").read_text()
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors == log.strip().splitlines()[-1:]
    assert re.match(r"error: results/model/model.onnx: export check failed on val: argmax agrees "
                    r"on \d+\.\d+% of pixels \(need >= 99\.9%\)", errors[0])  # fmt: skip
    assert not (work / "results/model/export_check.json").exists()


def test_check_scores_torch_and_onnxruntime_each_on_its_own(tmp_path):
    """The parity arithmetic against an ONNX graph built by hand that predicts one class
    everywhere: agreement, logit gap and both mIoUs are what the two outputs give (fast: no
    training, no export)."""
    import onnx
    import torch
    from onnx import TensorProto, helper

    from camvidseg.core.errors import UserError
    from camvidseg.deploy.export import compare, verdict
    from camvidseg.deploy.runtime import INPUT_NAME, OUTPUT_NAME, open_session
    from camvidseg.evaluation.inference import predict_logits
    from camvidseg.training.segmenter import Segmenter

    k, rng = 3, np.random.default_rng(0)
    torch.manual_seed(0)
    model = Segmenter("lraspp_mobilenet_v3_large", k, aux_loss=False).eval()
    images = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(2)]
    batches = [torch.from_numpy(np.ascontiguousarray(i.transpose(2, 0, 1)))[None] for i in images]
    ours = torch.cat([predict_logits(model, b, "cpu") for b in batches])
    predicted = ours.argmax(1)
    constant = int(torch.bincount(predicted.flatten(), minlength=k).argmin())  # rarest class
    bias = torch.zeros(k)
    bias[constant] = 1.0
    # Cast, then a 1x1 convolution with zero weights: logits = bias at every pixel.
    graph = helper.make_graph(
        [helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
         helper.make_node("Conv", ["pixels", "weight", "bias"], [OUTPUT_NAME])],
        "one_class",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", k, "h", "w"])],
        [helper.make_tensor("weight", TensorProto.FLOAT, [k, 3, 1, 1], [0.0] * 3 * k),
         helper.make_tensor("bias", TensorProto.FLOAT, [k], bias.tolist())],
    )  # fmt: skip
    path = tmp_path / "one_class.onnx"
    graph_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                    ir_version=10)  # fmt: skip
    helper.set_model_props(graph_model, {"classes": '["a", "b", "c"]'})  # as the export writes
    onnx.save(graph_model, str(path))

    class Images:  # every label the constant class
        def __len__(self):
            return len(images)

        def load(self, i):
            return images[i], np.full(images[i].shape[:2], constant, np.uint8)

    parity = compare(model, open_session(path), Images(), ["a", "b", "c"])
    agreement = float((predicted == constant).float().mean())
    assert agreement < 1 and parity["pixels"] == 2 * 32 * 48
    assert parity["argmax_agreement"] == pytest.approx(agreement)
    gap = float((ours - bias[None, :, None, None]).abs().max())
    assert parity["max_abs_logit_diff"] == pytest.approx(gap)
    assert parity["mIoU_onnxruntime"] == 1.0  # right everywhere: every label is its class
    assert parity["mIoU_torch"] < 1
    assert parity["mIoU_abs_diff"] == pytest.approx(1 - parity["mIoU_torch"])
    with pytest.raises(UserError, match=r"one_class\.onnx: export check failed on val"):
        verdict(parity, path, "val")


@pytest.mark.slow
def test_onnx_backend_matches_torch_where_torch_cannot_be_imported(run_dir, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(run_dir / "results/data/extracted/CamVid/val", images)
    for source in (run_dir / "results/data/extracted/CamVid/test").iterdir():
        shutil.copy(source, images / source.name)
    model, palette = run_dir / "results/model", run_dir / "results/data/palette.json"
    run_cli("predict", "--backend", "torch", "--model", model / "best.pth", "--palette", palette,
            "--input-dir", images, "--device", "cpu", "--out", tmp_path / "torch")  # fmt: skip
    result = torchless("module", "camvidseg.deploy.predict", "--backend", "onnx", "--model",
                       model / "model.onnx", "--palette", palette, "--input-dir", images,
                       "--out", tmp_path / "onnx")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "4 images segmented" in result.stdout
    assert loaded_modules(result) <= DEPLOY_MODULES, loaded_modules(result)
    same = total = 0
    for mask in sorted((tmp_path / "torch").glob("*_mask.png")):
        ours = np.asarray(Image.open(mask))
        theirs = np.asarray(Image.open(tmp_path / "onnx" / mask.name))
        same += int((ours == theirs).all(axis=-1).sum())
        total += ours.shape[0] * ours.shape[1]
    assert total == 4 * 48 * 64 and same / total >= 0.999


@pytest.mark.slow
def test_torch_really_is_blocked_in_the_torchless_runner(tmp_path):
    program = tmp_path / "uses_torch.py"
    program.write_text("import torch\n")
    result = torchless("file", program)
    assert result.returncode != 0 and "torch is blocked in this test" in result.stderr


@pytest.mark.slow
def test_cost_and_speed_are_in_the_metrics(run_dir):
    import torchvision

    cost = read(run_dir, "metrics/cost.json")
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        num_classes=31, weights_backbone=None
    )
    assert cost["params"] == sum(p.numel() for p in net.parameters())
    assert cost["resolution"] == [48, 64] and cost["gflops_per_image"] > 0
    cpu = cost["speed"]["cpu"]
    for backend in ("torch_eager", "onnxruntime"):
        assert cpu[backend]["images_per_s"] > 0 and cpu[backend]["repeats"] >= 2
    ratio = cpu["onnxruntime"]["images_per_s"] / cpu["torch_eager"]["images_per_s"]
    assert cpu["onnxruntime_vs_eager"] == pytest.approx(ratio)


def card_blocks(run_dir) -> list[str]:
    card = (run_dir / "results/model/MODEL_CARD.md").read_text()
    return re.findall(r"```python\n(.*?)\n```", card, re.S)


def printed_miou(result) -> float:
    assert result.returncode == 0, result.stderr
    return float(re.search(r"val mIoU (\d\.\d+)", result.stdout).group(1))


@pytest.mark.slow
def test_model_card_snippets_reproduce_the_stored_val_miou(run_dir, tmp_path):
    torch_loader, onnx_loader, scoring = card_blocks(run_dir)
    assert all(len(block.splitlines()) <= 10 for block in (torch_loader, onnx_loader, scoring))
    stored = read(run_dir, "metrics/val.json")["modes"]["whole"]["mIoU"]
    for name, loader in (("torch", torch_loader), ("onnx", onnx_loader)):
        (tmp_path / f"snippet_{name}.py").write_text(loader + "\n" + scoring + "\n")
    result = subprocess.run([sys.executable, tmp_path / "snippet_torch.py"], cwd=run_dir,
                            capture_output=True, text=True)  # fmt: skip
    assert printed_miou(result) == pytest.approx(stored, abs=1e-4)
    result = torchless("file", tmp_path / "snippet_onnx.py", cwd=run_dir)  # needs no torch
    assert printed_miou(result) == pytest.approx(stored, abs=0.001)
    assert loaded_modules(result) <= DEPLOY_MODULES


@pytest.mark.slow
def test_model_card_holds_what_people_need(run_dir):
    card = (run_dir / "results/model/MODEL_CARD.md").read_text()
    val = read(run_dir, "metrics/val.json")
    cost = read(run_dir, "metrics/cost.json")
    for heading in ("Model", "Classes", "Data", "Training recipe", "Scores", "Cost and speed",
                    "Export parity", "Limits", "How to use"):  # fmt: skip
        assert f"\n## {heading}" in card
    assert "LR-ASPP head on a MobileNetV3-Large backbone" in card
    assert "| 21 | Sky | " in card and "`#808080` (128, 128, 128)" in card
    # Which classes each split scores, and why the others are not (31 predicted, fewer scored).
    scored = {c["class"] for c in val["per_class"] if c["IoU"] is not None}
    assert f"The model predicts all {len(val['per_class'])} classes" in card
    assert f"Classes scored: val {len(scored)}; test " in card
    for row in card.split("## Classes")[1].split("## Data")[0].splitlines():
        if re.match(r"\| \d+ \| ", row):
            name, where = row.split(" | ")[1], row.split(" | ")[-1].rstrip(" |")
            assert ("val" in where.split(", ")) == (name in scored), row
    assert "train 6, val 2, test 2" in card
    index = json.loads((run_dir / "results/data/prepared/index.json").read_text())
    assert index["content_id"].startswith("sha256:")
    assert f"| content hash | `{index['content_id']}` |" in card
    assert "lr 0.003" in card and "12 epochs" in card
    assert f"| val | whole | {val['mIoU']:.4f} |" in card
    assert f"{cost['params'] / 1e6:.2f} M parameters" in card
    assert "opset 18" in card
    html = (run_dir / "results/model/MODEL_CARD.html").read_text()
    assert "<table>" in html and "background:#808080" in html


@pytest.mark.slow
def test_slide_and_tta_scores_sit_beside_whole_in_the_json_and_the_card(run_dir, tmp_path):
    out = tmp_path / "metrics"
    prepared, palette = run_dir / "results/data/prepared", run_dir / "results/data/palette.json"
    run_cli("evaluate", "--model", run_dir / "results/model/best.pth", "--prepared", prepared,
            "--palette", palette, "--split", "val", "--device", "cpu", "--mode", "slide",
            "--crop-size", 32, 48, "--stride", 16, 24, "--flip", "--scales", 0.75, 1.0,
            "--out-json", out / "val.json", "--out-csv", out / "val.csv")  # fmt: skip
    scores = json.loads((out / "val.json").read_text())
    label = "slide 32x48/16x24 + scales 0.75,1 + flip"
    assert scores["inference"]["mode"] == "slide" and scores["inference"]["label"] == label
    assert list(scores["modes"]) == [label, "whole"]
    assert scores["modes"][label]["mIoU"] == scores["mIoU"]
    whole = read(run_dir, "metrics/val.json")
    assert scores["modes"]["whole"]["mIoU"] == pytest.approx(whole["mIoU"], abs=1e-12)
    assert list(whole["modes"]) == ["whole"] and whole["inference"]["mode"] == "whole"

    r = run_dir / "results"
    run_cli("card", "--model", f"{r}/model/best.pth", "--onnx", f"{r}/model/model.onnx",
            "--palette", palette, "--manifest", f"{r}/data/dataset.json", "--prepared", prepared,
            "--history", f"{r}/model/history.json", "--check", f"{r}/model/export_check.json",
            "--cost", f"{r}/metrics/cost.json", "--metrics", out / "val.json",
            "--settings", json.dumps(settings_of()), "--out", tmp_path / "card.md")  # fmt: skip
    card = (tmp_path / "card.md").read_text()
    assert f"| val | {label} | {scores['mIoU']:.4f} |" in card
    assert f"| val | whole | {whole['mIoU']:.4f} |" in card


def settings_of() -> dict:
    import yaml

    from camvidseg.core import settings

    config = yaml.safe_load(CONFIG.read_text())
    return {s: settings.resolve(s, config.get(s)) for s in ("dataset", "model", "train", "eval")}


@pytest.mark.slow
def test_slide_stride_beyond_the_crop_is_one_line(run_dir, tmp_path):
    result = run_cli("evaluate", "--model", run_dir / "results/model/best.pth", "--prepared",
                     run_dir / "results/data/prepared", "--palette",
                     run_dir / "results/data/palette.json", "--split", "val", "--mode", "slide",
                     "--crop-size", 32, 32, "--stride", 40, 16, "--out-json", tmp_path / "v.json",
                     "--out-csv", tmp_path / "v.csv", check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: eval.stride: [40, 16] exceeds eval.crop_size [32, 32]; windows would leave "
        "pixels unscored"
    ]
    assert not (tmp_path / "v.json").exists()


@pytest.mark.slow
def test_predict_rule_uses_the_onnx_model_when_the_backend_is_onnx(run_dir, tmp_path):
    Image.new("RGB", (8, 6)).save(tmp_path / "street.png")  # predict.input_dir needs an image
    settings = f"predict={{input_dir: {tmp_path}, backend: onnx}}"
    result = snakemake(run_dir, "-n", "-p", "--config", settings, configfile=CONFIG)
    planned = jobs_planned(result)
    assert planned["predict"] == 1 and "export_onnx" not in planned  # the export is reused
    command = next(line for line in result.stdout.splitlines() if "camvidseg predict" in line)
    assert "--backend onnx" in command and "results/model/model.onnx" in command
