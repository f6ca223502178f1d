"""Segmenting a folder of new images with the trained model (CLI and rule)."""

import shutil

import numpy as np
from conftest import jobs_planned, run_cli, snakemake
from PIL import Image


def predict(run_dir, images, out, check=True):
    model, palette = run_dir / "results/model/best.pth", run_dir / "results/data/palette.json"
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
    assert len(list(out.iterdir())) == 4


def test_predict_on_empty_folder_is_one_line(tiny_run, tmp_path):
    result = predict(tiny_run, tmp_path, tmp_path / "out", check=False)
    assert result.returncode == 2 and result.stderr.startswith(
        "error: predict.input_dir: no images"
    )


def test_predict_rule_joins_the_dag_when_configured(tiny_run, tmp_path):
    result = snakemake(tiny_run, "-n", "--config", f"predict={{input_dir: {tmp_path}}}")
    assert jobs_planned(result) == {"predict": 1, "all": 1}
