"""RGB/SegNet labels -> class-index masks: correctness, unknown colors, bad files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, png_bomb, run_cli
from PIL import Image

COLORS = {"Sky": (128, 128, 128), "Road": (128, 64, 128), "Void": (0, 0, 0)}


@pytest.fixture
def dataset(tmp_path):
    """One image with a hand-made RGB label, already indexed and paletted."""
    root = tmp_path / "CamVid"
    (root / "train").mkdir(parents=True)
    (root / "train_labels").mkdir()
    label = np.zeros((4, 6, 3), np.uint8)
    label[:2] = COLORS["Sky"]
    label[2:] = COLORS["Road"]
    label[3, 5] = COLORS["Void"]
    Image.fromarray(np.full((4, 6, 3), 90, np.uint8)).save(root / "train/a.png")
    Image.fromarray(label).save(root / "train_labels/a_L.png")
    manifest = tmp_path / "dataset.json"
    manifest.write_text(
        json.dumps(
            {
                "root": str(root),
                "layout": "camvid32",
                "class_dict": None,
                "splits": {
                    "train": [
                        {"stem": "a", "image": "train/a.png", "label": "train_labels/a_L.png"}
                    ]
                },
            }
        )
    )
    from camvidseg.data.palette import build_rgb_palette

    pal = build_rgb_palette(list(COLORS.items()), "camvid32", ["Void"])
    pal |= {"layout": "camvid32", "ignore_index": 255}
    (tmp_path / "palette.json").write_text(json.dumps(pal))
    return tmp_path


def convert(tmp, *extra):
    out = tmp / "prepared"
    result = run_cli(
        "convert",
        "--manifest",
        tmp / "dataset.json",
        "--palette",
        tmp / "palette.json",
        "--out",
        out,
        "--threads",
        "2",
        *extra,
        check=False,
    )
    return result, out


def test_masks_hold_class_ids_and_keep_a_palette(dataset):
    result, out = convert(dataset)
    assert result.returncode == 0, result.stderr
    mask = Image.open(out / "masks/train/a.png")
    assert mask.mode == "P"
    ids = np.asarray(mask)
    assert (ids[:2] == 0).all() and (ids[2, :] == 1).all() and ids[3, 5] == 255
    assert mask.getpalette()[3:6] == [128, 64, 128]  # Road looks like Road in a viewer


def test_unknown_colors_are_counted_and_ignored(dataset):
    label = np.asarray(Image.open(dataset / "CamVid/train_labels/a_L.png")).copy()
    label[0, :3] = (1, 2, 3)
    Image.fromarray(label).save(dataset / "CamVid/train_labels/a_L.png")
    result, out = convert(dataset)
    assert result.returncode == 0
    assert "3 pixel(s) of unknown color(s) [[1, 2, 3]] ignored" in result.stdout
    assert (np.asarray(Image.open(out / "masks/train/a.png"))[0, :3] == 255).all()
    index = json.loads((out / "index.json").read_text())
    assert list(index["unknown_pixels"].values()) == [3]

    shutil.rmtree(out)
    result, out = convert(dataset, "--strict-colors")
    assert result.returncode == 2 and not out.exists()
    assert "a_L.png: 3 pixel(s) with color [1, 2, 3] not in the palette" in result.stderr


def test_cache_equals_the_png_masks_and_images(dataset):
    """Training reads the cache, the PNG masks are what a user checks: both say the same,
    unknown colors included (ignored in both)."""
    label = np.asarray(Image.open(dataset / "CamVid/train_labels/a_L.png")).copy()
    label[1, 2:] = (1, 2, 3)
    Image.fromarray(label).save(dataset / "CamVid/train_labels/a_L.png")
    result, out = convert(dataset, "--cache-images")
    assert result.returncode == 0, result.stderr
    cache = json.loads((out / "index.json").read_text())["cache"]["train"]
    masks, images = np.load(out / cache["masks"]), np.load(out / cache["images"])
    png = np.asarray(Image.open(out / "masks/train/a.png"))
    assert masks.shape == (1, 4, 6) and np.array_equal(masks[0], png)
    assert (png[1, 2:] == 255).all() and (png[1, :2] == 0).all()
    assert np.array_equal(images[0], np.asarray(Image.open(dataset / "CamVid/train/a.png")))
    # What training reads: the same arrays from the cache as from the files.
    from camvidseg.data.dataset import SegmentationDataset

    cached, decoded = SegmentationDataset(out, "train"), SegmentationDataset(out, "train")
    decoded.cache = None
    assert all(np.array_equal(a, b) for a, b in zip(cached.load(0), decoded.load(0), strict=True))


def test_size_mismatch_names_the_file(dataset):
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(dataset / "CamVid/train/a.png")
    result, out = convert(dataset)
    assert result.returncode == 2 and not out.exists()
    assert "a_L.png: label size 6x4 differs from image a.png size 6x5" in result.stderr


def test_corrupt_png_names_the_file(dataset):
    path = dataset / "CamVid/train_labels/a_L.png"
    path.write_bytes(path.read_bytes()[:40])
    result, out = convert(dataset)
    assert result.returncode == 2 and not out.exists()
    assert (
        result.stderr.count("\n") == 1 and "a_L.png: corrupt or unreadable label" in result.stderr
    )


@pytest.mark.parametrize("cache", ["--cache-images", "--no-cache-images"])
def test_image_bomb_is_one_line_naming_the_file(dataset, cache):
    """Convert decodes images itself (the extract check may be bypassed by a CLI user)."""
    bomb = png_bomb(dataset / "CamVid/train/a.png")
    result, out = convert(dataset, cache)
    assert result.returncode == 2 and not out.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {bomb}: refusing image") and "bomb" in lines[0]


def test_read_image_refuses_a_bomb_before_decoding(tmp_path):
    from camvidseg.core.errors import UserError
    from camvidseg.data.dataset import read_image

    bomb = png_bomb(tmp_path / "big.png")
    with pytest.raises(UserError, match=r"big\.png: refusing image of 20000x10000 pixels"):
        read_image(str(bomb))


def test_a_killed_conversion_leaves_no_temporary_folder_after_the_next_run(dataset):
    """SIGKILL while the masks are being written leaves .prepared.<...>; the next run removes
    it (it knows the writer is gone) and writes the output."""
    command = [sys.executable, "-m", "camvidseg", "convert", "--manifest", dataset / "dataset.json",
               "--palette", dataset / "palette.json", "--out", dataset / "prepared"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    job = subprocess.Popen(command, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(dataset.glob(".prepared.*")) and job.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.killpg(job.pid, signal.SIGKILL)  # the converter and its worker processes
    job.wait()
    leftovers = list(dataset.glob(".prepared.*"))
    assert leftovers and not (dataset / "prepared").exists()
    result, out = convert(dataset)
    assert result.returncode == 0, result.stderr
    assert f"removed {leftovers[0]}, left by a run that was killed" in result.stdout
    assert not list(dataset.glob(".prepared.*")) and (out / "index.json").is_file()
