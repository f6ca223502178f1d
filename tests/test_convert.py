"""RGB/SegNet labels -> class-index masks: correctness, unknown colors, bad files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, png_bomb, read_only, run_cli, snakemake
from PIL import Image

# Car's color is no palindrome: a label or palette read in BGR order would not find it.
COLORS = {"Sky": (128, 128, 128), "Road": (128, 64, 128), "Car": (64, 0, 128), "Void": (0, 0, 0)}


@pytest.fixture
def dataset(tmp_path):
    """One image with a hand-made RGB label, already indexed and paletted."""
    root = tmp_path / "CamVid"
    (root / "train").mkdir(parents=True)
    (root / "train_labels").mkdir()
    label = np.zeros((4, 6, 3), np.uint8)
    label[:2] = COLORS["Sky"]
    label[2:] = COLORS["Road"]
    label[3, :2] = COLORS["Car"]
    label[3, 5] = COLORS["Void"]
    # Every pixel a different color, red != blue: channels in the wrong order show.
    image = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    image[..., 2] = 255 - image[..., 0]
    Image.fromarray(image).save(root / "train/a.png")
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
    assert (ids[3, :2] == 2).all() and (ids[3, 2:5] == 1).all()
    # Road and Car look like Road and Car in a viewer.
    assert mask.getpalette()[3:9] == [128, 64, 128, 64, 0, 128]


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
    from camvidseg.data.images import read_rgb

    bomb = png_bomb(tmp_path / "big.png")
    with pytest.raises(UserError, match=r"big\.png: refusing image of 20000x10000 pixels"):
        read_rgb(bomb)


def temporary_outputs(dataset: Path) -> list[Path]:
    """Convert's temporary siblings of ``prepared`` (not the stage's record beside it)."""
    return [p for p in dataset.glob(".prepared.*") if not p.name.endswith(".made.json")]


def test_a_killed_conversion_leaves_no_temporary_folder_after_the_next_run(dataset):
    """SIGKILL while the masks are being written leaves .prepared.<...>; the next run removes
    it (it knows the writer is gone) and writes the output."""
    command = [sys.executable, "-m", "camvidseg", "convert", "--manifest", dataset / "dataset.json",
               "--palette", dataset / "palette.json", "--out", dataset / "prepared"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    job = subprocess.Popen(command, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not temporary_outputs(dataset) and job.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.killpg(job.pid, signal.SIGKILL)  # the converter and its worker processes
    job.wait()
    leftovers = temporary_outputs(dataset)
    assert leftovers and not (dataset / "prepared").exists()
    result, out = convert(dataset)
    assert result.returncode == 0, result.stderr
    assert f"removed {leftovers[0]}, left by a run that was killed" in result.stdout
    assert not temporary_outputs(dataset) and (out / "index.json").is_file()


def test_a_palette_of_more_classes_than_a_mask_holds_is_refused(dataset):
    """A palette.json not made by the palette stage (300 classes): one line, no IndexError."""
    pal = json.loads((dataset / "palette.json").read_text())
    pal["classes"] = [{"id": i, "name": f"c{i}", "color": [i % 256, 0, 1]} for i in range(300)]
    (dataset / "palette.json").write_text(json.dumps(pal))
    result, out = convert(dataset)
    assert_one_line_error(result, "palette.json: 300 classes to train, more than 254")
    assert not out.exists()


def test_a_file_size_limit_is_one_line_naming_the_output(dataset):
    """Past ``ulimit -f`` a write fails (EFBIG; Python ignores SIGXFSZ): one line, not a worker's
    traceback, and no output."""
    result = run_cli(
        "convert", "--manifest", dataset / "dataset.json", "--palette", dataset / "palette.json",
        "--out", dataset / "prepared", "--threads", "2", max_file_bytes=200, check=False,
    )  # fmt: skip
    assert_one_line_error(result, "prepared: cannot write: over the file-size limit (ulimit -f)")
    assert not (dataset / "prepared").exists()
    assert not [p for p in dataset.iterdir() if p.name.startswith(".prepared.")]


def test_a_read_only_results_folder_is_one_line_naming_the_output(dataset):
    results = dataset / "results"
    results.mkdir()
    with read_only(results):
        result, _ = convert(dataset, "--out", results / "prepared")
    assert_one_line_error(result, f"{results / 'prepared'}: cannot write")
    assert not any(results.iterdir())


def flat_picture_dataset(tmp_path, count, side=3000):
    """``count`` pairs of solid side x side PNGs (each a few kB; 45 MB of masks and cache)."""
    root = tmp_path / "CamVid"
    (root / "train").mkdir(parents=True)
    (root / "train_labels").mkdir()
    Image.fromarray(np.full((side, side, 3), 90, np.uint8)).save(root / "train/0.png")
    Image.fromarray(np.full((side, side, 3), COLORS["Road"], np.uint8)).save(
        root / "train_labels/0_L.png"
    )
    image, label = (root / "train/0.png").read_bytes(), (root / "train_labels/0_L.png").read_bytes()
    pairs = []
    for i in range(count):
        (root / f"train/{i}.png").write_bytes(image)
        (root / f"train_labels/{i}_L.png").write_bytes(label)
        pairs.append(
            {"stem": str(i), "image": f"train/{i}.png", "label": f"train_labels/{i}_L.png"}
        )
    manifest = {"root": str(root), "layout": "camvid32", "class_dict": None,
                "splits": {"train": pairs}}  # fmt: skip
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    from camvidseg.data.palette import build_rgb_palette

    pal = build_rgb_palette(list(COLORS.items()), "camvid32", ["Void"])
    (tmp_path / "palette.json").write_text(json.dumps(pal | {"layout": "camvid32"}))
    return root


@pytest.mark.parametrize(("cache", "count", "crossing"), [("--cache-images", 2, 1),
                                                          ("--no-cache-images", 8, 7)])  # fmt: skip
def test_huge_flat_pictures_are_refused_before_anything_is_written(
    tmp_path, cache, count, crossing
):
    """Bombs after extraction: kilobytes of files that decode to gigabytes. What converting
    writes (a mask byte per pixel, 4 more with the cache) is held to the unpack limits."""
    root = flat_picture_dataset(tmp_path, count)
    assert sum(p.stat().st_size for p in root.rglob("*.png")) < 2**20
    result, out = convert(tmp_path, cache)
    assert_one_line_error(result, f"{root / f'train/{crossing}.png'}: refusing to decode")
    assert "(dataset.max_unpack_ratio)" in result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_decoded_bytes_are_held_to_max_unpack_gib(dataset):
    result, out = convert(dataset, "--max-unpack-gib", "1e-9")
    assert_one_line_error(result, "train/a.png: refusing to decode")
    assert "more than dataset.max_unpack_gib (1e-09 GiB)" in result.stderr and not out.exists()


def test_the_rule_gives_convert_the_unpack_limits(tmp_path):
    config = "dataset={max_unpack_ratio: 7, max_unpack_gib: 3}"
    result = snakemake(tmp_path, "-n", "-p", "results/data/prepared", "--config", config)
    assert "--max-unpack-ratio 7 --max-unpack-gib 3" in result.stdout, result.stdout
