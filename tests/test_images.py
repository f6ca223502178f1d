"""One decoding policy for every stage: 16-bit pictures scaled to 8 bits, truncated files refused
(convert and its cache, the data loader of train/evaluate/visualize, predict's backends)."""

import ast
import json
import re

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, run_cli
from PIL import Image

from camvidseg.core.errors import UserError
from camvidseg.data.dataset import SegmentationDataset
from camvidseg.data.images import read_ids, read_rgb

GRAY = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5  # 0..235, every value distinct


def save_16bit_gray(path, gray8):
    """A 16-bit grayscale PNG of ``gray8`` scaled to the full 16-bit range (v * 257)."""
    Image.fromarray(gray8.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode.startswith("I;16")
    return path


def picture(path, suffix):
    """A real 40x56 picture in ``suffix``'s format."""
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(image).save(path, "JPEG" if suffix == ".jpg" else "PNG")
    return path


def truncated(path, suffix):
    """A real picture of ``suffix``'s format cut to two thirds of its bytes."""
    data = picture(path, suffix).read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def test_16_bit_gray_is_scaled_not_clipped_to_white(tmp_path):
    path = save_16bit_gray(tmp_path / "a.png", GRAY)
    assert np.array_equal(read_rgb(path), np.repeat(GRAY[..., None], 3, axis=2))


def test_16_bit_color_keeps_its_high_byte(tmp_path):
    import cv2

    rgb16 = np.random.default_rng(1).integers(0, 65536, (6, 8, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), rgb16[..., ::-1])  # PIL writes no 16-bit RGB
    assert np.array_equal(read_rgb(tmp_path / "a.png"), (rgb16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("reader", [read_rgb, read_ids])
def test_truncated_files_are_refused_naming_them(tmp_path, suffix, reader):
    path = truncated(tmp_path / f"a{suffix}", suffix)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: .*truncated"):
        reader(path)


DECODERS = {("Image", "open"), ("cv2", "imread"), ("cv2", "imdecode"), ("mmcv", "imread"),
            ("mmcv", "imfrombytes"), ("imageio", "imread")}  # fmt: skip


def test_no_stage_decodes_pictures_outside_the_one_room():
    """Every decode goes through images.py (PIL with its checks), never Image.open or OpenCV's
    readers elsewhere: OpenCV decodes a truncated JPEG silently, PIL clips 16-bit to white.
    (Code in strings, such as the model card's usage example, is not the project's.)"""
    offenders = []
    for path in sorted((REPO / "src/camvidseg").rglob("*.py")):
        if path.name == "images.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            named = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            if named and (func.value.id, func.attr) in DECODERS:
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def one_image_dataset(tmp_path, write_image, name="a.png", size=(6, 8)):
    """A camvid32 dataset of one image written by ``write_image(path)`` with an RGB label."""
    root = tmp_path / "CamVid"
    (root / "train").mkdir(parents=True)
    (root / "train_labels").mkdir()
    image = write_image(root / "train" / name)
    Image.fromarray(np.full((*size, 3), (128, 64, 128), np.uint8)).save(
        root / "train_labels/a_L.png"
    )
    pair = {"stem": "a", "image": f"train/{name}", "label": "train_labels/a_L.png"}
    manifest = {"root": str(root), "layout": "camvid32", "class_dict": None,
                "splits": {"train": [pair]}}  # fmt: skip
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    palette = {"encoding": "rgb", "layout": "camvid32", "ignore_index": 255,
               "classes": [{"id": 0, "name": "Road", "color": [128, 64, 128]}],
               "lookup": [{"value": [128, 64, 128], "name": "Road", "train_id": 0}]}  # fmt: skip
    (tmp_path / "palette.json").write_text(json.dumps(palette))
    return image


def convert(tmp_path, *flags):
    return run_cli(
        "convert", "--manifest", tmp_path / "dataset.json", "--palette",
        tmp_path / "palette.json", "--out", tmp_path / "prepared", "--threads", "1", *flags,
        check=False,
    )  # fmt: skip


def test_a_16_bit_image_is_the_same_in_the_cache_and_the_loader(tmp_path):
    one_image_dataset(tmp_path, lambda path: save_16bit_gray(path, GRAY))
    assert convert(tmp_path, "--cache-images").returncode == 0
    cached = SegmentationDataset(tmp_path / "prepared", "train").load(0)[0]
    index = json.loads((tmp_path / "prepared/index.json").read_text())
    index["cache"] = {}
    (tmp_path / "prepared/index.json").write_text(json.dumps(index))
    decoded = SegmentationDataset(tmp_path / "prepared", "train").load(0)[0]
    expected = np.repeat(GRAY[..., None], 3, axis=2)
    assert np.array_equal(cached, expected) and np.array_equal(decoded, expected)


@pytest.mark.parametrize("cache", ["--cache-images", "--no-cache-images"])
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_truncated_training_image_is_refused_by_convert(tmp_path, cache, suffix):
    image = one_image_dataset(
        tmp_path, lambda path: truncated(path, suffix), f"a{suffix}", (40, 56)
    )
    result = convert(tmp_path, cache)
    assert_one_line_error(result, f"{image}: ")
    assert "truncated" in result.stderr and not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_the_loader_refuses_an_image_truncated_after_conversion(tmp_path, suffix):
    """Evaluate, visualize and training without a cache decode through the dataset."""
    image = one_image_dataset(tmp_path, lambda path: picture(path, suffix), f"a{suffix}", (40, 56))
    assert convert(tmp_path, "--no-cache-images").returncode == 0
    truncated(image, suffix)
    with pytest.raises(UserError, match=rf"^{re.escape(str(image))}: .*truncated"):
        SegmentationDataset(tmp_path / "prepared", "train").load(0)
