"""Segmenting a folder of new images with the trained model (CLI and rule)."""

import shutil

import numpy as np
import pytest
from conftest import assert_one_line_error, jobs_planned, png_bomb, run_cli, snakemake
from PIL import Image


def predict(run_dir, images, out, check=True, model=None):
    model = model or run_dir / "results/model/best.pth"
    palette = run_dir / "results/data/palette.json"
    return run_cli(
        "predict",
        "--model",
        model,
        "--palette",
        palette,
        "--input-dir",
        images,
        "--device",
        "cpu",
        "--out",
        out,
        check=check,
    )


def test_predict_writes_mask_and_overlay_per_image(tiny_run, tmp_path):
    images = tmp_path / "new"
    images.mkdir()
    for source in sorted((tiny_run / "results/data/extracted/CamVid/test").iterdir()):
        shutil.copy(source, images / source.name)
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "predict"
    result = predict(tiny_run, images, out)
    assert "2 images segmented" in result.stdout
    for source in images.glob("*.png"):
        mask = np.asarray(Image.open(out / f"{source.stem}_mask.png"))
        assert mask.shape == (48, 64, 3)
        assert (out / f"{source.stem}_overlay.png").is_file()
        panel = Image.open(out / f"{source.stem}_panel.png")
        assert panel.width > 3 * 64  # image | prediction | overlay, with a legend
    assert len(list(out.iterdir())) == 6  # mask, overlay and panel per image


def test_predict_on_empty_folder_is_one_line(tiny_run, tmp_path):
    result = predict(tiny_run, tmp_path, tmp_path / "out", check=False)
    assert result.returncode == 2 and result.stderr.startswith(
        "error: predict.input_dir: no images"
    )


def test_predict_rule_joins_the_dag_when_configured(tiny_run, tmp_path):
    folder = images_folder(tmp_path, "street.jpg")
    result = snakemake(tiny_run, "-n", "--config", f"predict={{input_dir: {folder}}}")
    assert jobs_planned(result) == {"predict": 1, "provenance": 1, "all": 1}


@pytest.mark.parametrize("problem", ["missing", "no images"])
def test_predict_input_dir_is_checked_when_the_workflow_is_read(tiny_run, tmp_path, problem):
    folder = tmp_path / "new"
    if problem == "no images":
        folder.mkdir()
        (folder / "notes.txt").write_text("not an image")
    result = snakemake(tiny_run, "-n", "--config", f"predict={{input_dir: {folder}}}", check=False)
    expected = "is not a folder" if problem == "missing" else "no images (.png"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr  # beside Snakemake's notes
    assert "predict.input_dir" in errors[0] and expected in errors[0], errors[0]
    assert "MissingInputException" not in result.stderr and "Traceback" not in result.stderr


def test_command_line_predict_writes_outside_the_workflow_outputs(tiny_run, tmp_path):
    """Run by hand without --out, predict writes predictions/, never the predict rule's
    results/predict (which the workflow would then take as its own, up to date)."""
    images = images_folder(tmp_path, "street.png")
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run_cli(
        "predict", "--model", tiny_run / "results/model/best.pth",
        "--palette", tiny_run / "results/data/palette.json", "--input-dir", images,
        cwd=workdir,
    )  # fmt: skip
    assert "1 images segmented into predictions" in result.stdout
    assert sorted(p.name for p in (workdir / "predictions").iterdir()) == [
        "street_mask.png", "street_overlay.png", "street_panel.png"
    ]
    assert not (workdir / "results").exists()


def assert_one_line(result, out, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists()


def images_folder(tmp_path, *names):
    folder = tmp_path / "new"
    folder.mkdir()
    for name in names:
        Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(folder / name)
    return folder


def test_same_stem_with_two_suffixes_is_refused_before_loading(tmp_path):
    """x.png and x.jpg would both become x_mask.png: one output pair, "2 images" in the log."""
    folder = images_folder(tmp_path, "x.png", "x.jpg", "y.png")
    out = tmp_path / "predict"
    result = predict(tmp_path, folder, out, check=False)
    assert_one_line(result, out, "x.jpg and x.png", "would both be written as x_mask.png")


def test_pickled_model_file_is_one_line(tmp_path):
    import argparse

    import torch

    model = tmp_path / "model.pth"
    torch.save({"meta": argparse.Namespace(model="x"), "state_dict": {}}, model)
    out = tmp_path / "predict"
    result = predict(tmp_path, images_folder(tmp_path, "a.png"), out, check=False, model=model)
    assert_one_line(result, out, f"{model}: refused: not a plain weights file", "(--model)")


def model_file(path, **meta_changes):
    """A model file as the train stage writes it (an untrained lraspp, 3 classes), its meta
    changed: a key set to None is removed."""
    import torch

    from camvidseg.training.segmenter import Segmenter

    meta = {"model": "lraspp_mobilenet_v3_large", "num_classes": 3, "aux_loss_weight": 0.0,
            "precision": "fp32", "classes": ["a", "b", "c"]}  # fmt: skip
    state = Segmenter(meta["model"], 3, aux_loss=False).state_dict()
    meta |= meta_changes
    meta = {key: value for key, value in meta.items() if value is not None}
    torch.save({"meta": meta, "state_dict": state}, path)
    return path


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"num_classes": 5}, "lraspp_mobilenet_v3_large with 5 classes its meta names "
                             "(0 tensors missing, 0 unexpected, 4 of another shape)"),
        ({"model": "deeplabv3_mobilenet_v3_large"}, "not those of the deeplabv3_mobilenet_v3_large"
                                                    " with 3 classes its meta names"),
        ({"aux_loss_weight": None}, "(meta.aux_loss_weight: missing or of another kind)"),
        ({"num_classes": "3"}, "(meta.num_classes: missing or of another kind)"),
        ({"num_classes": 0}, "(meta.num_classes: missing or of another kind)"),
        ({"model": True}, "(meta.model: missing or of another kind)"),
    ],
)  # fmt: skip
def test_a_model_file_whose_meta_does_not_describe_its_weights_is_one_line(
    tmp_path, changes, reason
):
    """A hand-edited or mixed-up model file: the weights of one network under another's meta
    (a traceback from torch before), or meta keys missing or of another kind."""
    from camvidseg.core.errors import UserError
    from camvidseg.training.segmenter import load_trained

    path = model_file(tmp_path / "best.pth", **changes)
    with pytest.raises(UserError) as refused:
        load_trained(path)
    assert str(refused.value).startswith(f"{path}: ") and reason in str(refused.value)
    assert str(refused.value).endswith("(--model)")


def test_an_inference_stage_says_which_model_file_does_not_fit_in_one_line(tmp_path):
    model = model_file(tmp_path / "best.pth", num_classes=5)
    out = tmp_path / "predict"
    result = predict(tmp_path, images_folder(tmp_path, "a.png"), out, check=False, model=model)
    assert_one_line(result, out, f"{model}: its weights are not those of the", "(--model)")


def test_image_bomb_is_refused_before_loading(tmp_path):
    folder = images_folder(tmp_path, "a.png")
    png_bomb(folder / "b.png")
    out = tmp_path / "predict"
    result = predict(tmp_path, folder, out, check=False)
    assert_one_line(result, out, f"{folder / 'b.png'}: refusing image of 20000x10000 pixels")


def test_existing_output_folder_is_refused_before_loading(tmp_path):
    """The README's example run twice: the second run stops at once, naming the folder (the
    model path here does not even exist: it is never reached)."""
    out = tmp_path / "predict"
    out.mkdir()
    (out / "a_mask.png").write_bytes(b"from the first run")
    result = predict(tmp_path, images_folder(tmp_path, "a.png"), out, check=False)
    assert result.returncode == 2
    assert (
        result.stderr
        == f"error: {out}: folder exists and is not empty; remove it or choose another\n"
    )
    assert (out / "a_mask.png").read_bytes() == b"from the first run"


def onnx_predict(run_dir, images, out, check=True, model=None):
    return run_cli(
        "predict", "--model", model or run_dir / "results/model/model.onnx", "--backend", "onnx",
        "--palette", run_dir / "results/data/palette.json", "--input-dir", images,
        "--device", "cpu", "--out", out, check=check,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_truncated_image_is_refused_by_both_backends(tiny_run, tmp_path, backend, suffix):
    """OpenCV decodes a cut JPEG silently; both backends read through the one decoder."""
    folder = images_folder(tmp_path, "good.png")
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / f"cut{suffix}")
    data = (folder / f"cut{suffix}").read_bytes()
    (folder / f"cut{suffix}").write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "predict"
    result = (onnx_predict if backend == "onnx" else predict)(tiny_run, folder, out, check=False)
    assert_one_line(result, out, f"{folder / f'cut{suffix}'}: corrupt or unreadable image")


def test_a_16_bit_image_is_segmented_as_its_8_bit_twin_by_both_backends(tiny_run, tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    gray = np.random.default_rng(0).integers(0, 256, (48, 64), dtype=np.uint16)
    Image.fromarray(gray.astype(np.uint8)).convert("RGB").save(folder / "eight.png")
    Image.fromarray(gray * 257).save(folder / "sixteen.png")
    for backend, run in (("torch", predict), ("onnx", onnx_predict)):
        out = tmp_path / backend
        run(tiny_run, folder, out)
        masks = [np.asarray(Image.open(out / f"{n}_mask.png")) for n in ("eight", "sixteen")]
        assert np.array_equal(*masks), backend


def test_a_valid_but_unrelated_onnx_model_is_one_line(tmp_path):
    """An ONNX file that is not this project's export (here one Identity node) is named before
    any image is read, instead of failing inside onnxruntime at the first image."""
    import onnx
    from onnx import TensorProto, helper

    tensor = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "other", [tensor[0]], [tensor[1]])
    model = tmp_path / "other.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), model
    )
    out = tmp_path / "predict"
    result = onnx_predict(tmp_path, images_folder(tmp_path, "a.png"), out, False, model)
    assert_one_line(result, out, f"{model}: not a segmentation model exported by camvidseg")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_palette_of_other_classes_than_the_models_is_one_line(tiny_run, tmp_path, backend):
    """Colors and legend come from the palette: one of another run would name the wrong
    classes (or leave some black) without a word."""
    import json

    palette = json.loads((tiny_run / "results/data/palette.json").read_text())
    palette["classes"] = palette["classes"][:1]
    (tmp_path / "palette.json").write_text(json.dumps(palette))
    model = tiny_run / "results/model" / ("best.pth" if backend == "torch" else "model.onnx")
    out = tmp_path / "predict"
    result = run_cli("predict", "--model", model, "--backend", backend, "--palette",
                     tmp_path / "palette.json", "--input-dir", tiny_run / "results/vis_data",
                     "--device", "cpu", "--out", out, check=False)  # fmt: skip
    classes = len(json.loads((tiny_run / "results/data/palette.json").read_text())["classes"])
    assert_one_line_error(
        result, f"its 1 classes are not the {classes} {model} was trained on; give the palette"
    )
    assert not out.exists()
