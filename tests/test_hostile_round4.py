"""Hostile and unlucky inputs, fourth round: a stage run by hand holds the schema's ranges, a
phone photo is read upright, labels of another encoding or another run's palette are refused,
a cut model file is called cut, and no output may replace an input. Each is one line, in-process
where the stage allows it (a torch process costs seconds)."""

import argparse
import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_images import one_image_dataset
from test_predict import model_file

from camvidseg.core.errors import UserError, cli
from camvidseg.core.settings import option
from camvidseg.data import convert, palette, sample
from camvidseg.data.extract import pair_split
from camvidseg.data.images import checked_size, read_rgb
from camvidseg.data.palette import build_rgb_palette, read_palette_of
from camvidseg.evaluation import evaluate, visualize
from camvidseg.training.segmenter import read_plain
from camvidseg.training.train import read_settings


def refused(main, argv, capsys) -> str:
    """The refusal of ``argv`` by a stage's ``main``: exit 2 and one line ``error: ...``, or
    argparse's own ``prog: error: argument ...`` after its usage lines."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    *usage, line = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    by_argparse = bool(usage) and usage[0].startswith("usage: ") and ": error: argument " in line
    assert by_argparse or (not usage and line.startswith("error: ")), [*usage, line]
    return line


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("dataset.sample.width", "3", "3 is not at least 32"),
        ("dataset.sample.height", "100000", "100000 is not at most 4096"),
        ("vis.alpha", "2", "2 is not at most 1"),
        ("eval.batch_size", "0", "0 is not at least 1"),
        ("eval.num_workers", "-3", "-3 is not at least 0"),
        ("eval.stride", "0 4", "0 is not at least 1"),
        ("train.lr", "0", "0 is not above 0"),
    ],
)
def test_a_stage_option_holds_the_range_of_its_setting(setting, value, reason, capsys):
    """The workflow's config check refuses these; a stage run by hand refused none of them
    (a stride of 0 was a traceback, an alpha of 2 drew garbage)."""
    parser = argparse.ArgumentParser(prog="stage")
    parser.add_argument("--x", **option(setting))
    with pytest.raises(SystemExit):
        parser.parse_args(["--x", *value.split()])
    assert f"argument --x: {reason}" in capsys.readouterr().err
    assert parser.parse_args([]).x == option(setting)["default"]  # the default still parses


def test_the_sample_stage_refuses_a_picture_narrower_than_it_can_draw(tmp_path, capsys):
    """``--width 3`` spun forever at full CPU (the skyline's blocks were 0 pixels wide)."""
    argv = ["--out", tmp_path / "s.tar.gz", "--width", "3", "--train", "1"]
    signal.alarm(60)  # should the range be lost again: the test dies instead of spinning
    try:
        assert "argument --width: 3 is not at least 32" in refused(sample.main, argv, capsys)
    finally:
        signal.alarm(0)
    assert not (tmp_path / "s.tar.gz").exists()


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_convert_needs_a_worker(threads, capsys):
    argv = ["--manifest", "m.json", "--palette", "p.json", "--out", "o", "--threads", threads]
    assert f"argument --threads: {threads} is not at least 1" in refused(convert.main, argv, capsys)


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({"train": {"batch_size": 0}}, "train.batch_size: 0 is less than the minimum of 1"),
        ({"train": {"epochs": -1}}, "train.epochs: -1 is less than the minimum of 1"),
        ({"train": {"lr": "fast"}}, "train.lr: 'fast' is not of type 'number'"),
        ({"train": {"crop_size": [4, 64]}}, "train.crop_size.0: 4 is less than the minimum of 8"),
        ({"train": 5}, "train: expected a mapping of settings, not 5"),
        ({"model": "x"}, 'model: expected a mapping of settings, not "x"'),
        ({"model": {"name": "unet"}}, "model.name: 'unet' is not one of"),
    ],
)
def test_train_settings_given_by_hand_are_checked_against_the_schema(given, reason):
    """A batch of 0 was a ZeroDivisionError, epochs -1 an MMEngine ValueError."""
    with pytest.raises(UserError, match=f"^{re.escape(reason)}"):
        read_settings(json.dumps(given))


def test_train_settings_given_as_a_file_name_say_they_take_the_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("settings.json").write_text('{"train": {"epochs": 2}}')
    with pytest.raises(UserError, match=r'takes the JSON text, not a file: --settings "\$\(cat'):
        read_settings("settings.json")
    for not_json in ("absent.json", '{"train": ' + "x" * 300):  # longer than a file name
        with pytest.raises(UserError, match="--settings: not JSON"):
            read_settings(not_json)


def sideways_jpeg(path, width=64, height=48):
    """A JPEG stored ``width`` x ``height`` whose EXIF says: turn it a quarter clockwise (6),
    as a phone held upright writes it; its left column is white."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, "JPEG", exif=exif.tobytes(), quality=95)
    return path


def test_a_phone_photo_is_read_upright_as_every_viewer_shows_it(tmp_path):
    photo = sideways_jpeg(tmp_path / "photo.jpg")
    with Image.open(photo) as stored:
        assert stored.size == (64, 48)  # as stored: wide
    assert checked_size(photo) == (48, 64)  # (width, height) upright
    upright = read_rgb(photo)
    assert upright.shape == (64, 48, 3)
    assert upright[:8].mean() > 200 and upright[8:].mean() < 50  # the white column is on top
    plain = tmp_path / "plain.jpg"  # no EXIF: as stored
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(plain)
    assert read_rgb(plain).shape == (48, 64, 3) and checked_size(plain) == (64, 48)


def test_extract_refuses_one_image_twice_and_says_labels_must_be_png(tmp_path):
    """x.png beside x.jpg: one was trained on, the other dropped without a word. A label saved
    as JPEG was called an image without label."""
    root = tmp_path / "CamVid"
    for folder in ("train", "train_labels"):
        (root / folder).mkdir(parents=True)
    tiny = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
    tiny.save(root / "train/a.png")
    tiny.save(root / "train_labels/a_L.png")
    assert [pair["stem"] for pair in pair_split(root, "train", "camvid32")] == ["a"]
    tiny.save(root / "train/b.png")
    tiny.save(root / "train_labels/b_L.jpg")
    found = r"1 image\(s\) without label: b.png; labels must be PNG, found b_L.jpg in"
    with pytest.raises(UserError, match=found):
        pair_split(root, "train", "camvid32")
    (root / "train_labels/b_L.jpg").rename(root / "train_labels/b_L.png")
    tiny.save(root / "train/b.jpg")
    with pytest.raises(UserError, match=r"train: b\.jpg and b\.png are one image twice; keep"):
        pair_split(root, "train", "camvid32")


def test_labels_with_no_pixel_of_a_trained_class_are_refused_before_training(tmp_path, capsys):
    """Index masks saved as gray where RGB ones are expected: every pixel was ignored with a
    note, then training ran on a NaN loss and exported a model."""
    one_image_dataset(tmp_path, lambda path: Image.new("RGB", (8, 6)).save(path))
    Image.fromarray(np.full((6, 8), 1, np.uint8)).save(tmp_path / "CamVid/train_labels/a_L.png")
    manifest = json.loads((tmp_path / "dataset.json").read_text())
    manifest["class_dict"] = str(tmp_path / "CamVid/class_dict.csv")  # as extract records it
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    argv = ["--manifest", tmp_path / "dataset.json", "--palette", tmp_path / "palette.json",
            "--out", tmp_path / "prepared", "--threads", "1"]  # fmt: skip
    line = refused(convert.main, argv, capsys)
    assert "class_dict.csv: no pixel of the 1 train labels has the value of a trained class" in line
    assert "dataset.layout" in line
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name,r,g,b,name\nSky,1,2,3,X\nRoad,4,5,6,Y\n", "column(s) name appear more than once"),
        ("name,r,g,b\nSky,1_0,2,3\nRoad,4,5,6\n", "color of 'Sky' is not three integers"),
        ("name,r,g,b\nSky,+12,2,3\nRoad,4,5,6\n", "color of 'Sky' is not three integers"),
        ("name,r,g,b\nSky,\u0661\u0662,2,3\nRoad,4,5,6\n", "color of 'Sky' is not three integers"),
    ],
)
def test_class_dict_columns_twice_or_digits_python_alone_reads_are_refused(tmp_path, text, reason):
    """A second name column won silently; int() read "1_0" as 10 and Arabic-Indic digits."""
    path = tmp_path / "class_dict.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(reason)):
        palette.read_class_dict(path)
    path.write_text("name,r,g,b\nSky, 1 ,2,3\nRoad,4,5,6\n")
    assert palette.read_class_dict(path)[0] == ("Sky", (1, 2, 3))  # spaces around are fine


def test_ignoring_all_but_one_class_is_refused_by_the_palette_stage():
    class_dict = [("Road", (128, 64, 128)), ("Sky", (128, 128, 128)), ("Void", (0, 0, 0))]
    assert len(build_rgb_palette(class_dict, "camvid32", ["Void"])["classes"]) == 2
    with pytest.raises(UserError, match=r"ignore_classes: leaves 1 class\(es\) .* \(Road\); at"):
        build_rgb_palette(class_dict, "camvid32", ["Sky", "Void"])
    with pytest.raises(UserError, match=r"leaves 0 class\(es\) .* \(none\)"):
        build_rgb_palette(class_dict, "camvid32", ["Road", "Sky", "Void"])


def palette_file(path, names):
    classes = [{"id": i, "name": n, "color": [i, i, i]} for i, n in enumerate(names)]
    path.write_text(json.dumps({"encoding": "rgb", "classes": classes, "lookup": []}))
    return path


@pytest.mark.parametrize("stage", [evaluate, visualize])
def test_evaluate_and_visualize_refuse_another_runs_palette(stage, tmp_path, capsys):
    """A palette of 31 classes with a 3-class model scored and drew under the wrong names; the
    reverse was a traceback deep in scoring. predict already refused it."""
    model = model_file(tmp_path / "best.pth")
    other = palette_file(tmp_path / "palette.json", [f"c{i}" for i in range(31)])
    outputs = (["--out-json", tmp_path / "m.json", "--out-csv", tmp_path / "m.csv"]
               if stage is evaluate else ["--out", tmp_path / "panels"])  # fmt: skip
    split = ["--split", "val"] if stage is evaluate else []
    argv = ["--model", model, "--prepared", tmp_path / "prepared", "--palette", other,
            "--device", "cpu", *split, *outputs]  # fmt: skip
    line = refused(stage.main, argv, capsys)
    assert f"{other}: its 31 classes are not the 3 {model} was trained on" in line
    assert not list(tmp_path.glob("m.*")) and not (tmp_path / "panels").exists()
    same = palette_file(tmp_path / "same.json", ["a", "b", "c"])
    assert read_palette_of(same, model, ["a", "b", "c"])["classes"][2]["name"] == "c"
    assert read_palette_of(same, model, 3)  # a model file that records only the count


def test_a_cut_model_file_is_called_cut_and_a_pickle_of_code_refused(tmp_path):
    import fractions

    import torch

    whole = tmp_path / "whole.pth"
    torch.save({"w": torch.zeros(1000)}, whole)
    cut, empty, evil = tmp_path / "cut.pth", tmp_path / "empty.pth", tmp_path / "evil.pth"
    cut.write_bytes(whole.read_bytes()[:2000])
    empty.write_bytes(b"")
    torch.save({"w": fractions.Fraction(1, 3)}, evil)
    for path in (cut, empty):
        with pytest.raises(UserError, match=f"{path}: truncated, or not a PyTorch weights file"):
            read_plain(path, "--model")
    with pytest.raises(UserError, match=f"{evil}: refused: not a plain weights file"):
        read_plain(evil, "--model")


def test_no_output_may_replace_an_input_or_another_output(tmp_path, capsys):
    """``palette --out`` naming its own manifest overwrote it; two outputs of one path kept one."""
    manifest = tmp_path / "dataset.json"
    manifest.write_text('{"mine": true}')
    line = refused(palette.main, ["--manifest", manifest, "--out", manifest], capsys)
    assert f"{manifest}: an output of this stage would replace its input {manifest}" in line
    assert manifest.read_text() == '{"mine": true}'
    inside = tmp_path / "prepared" / "palette.json"
    line = refused(convert.main, ["--manifest", manifest, "--palette", inside,
                                  "--out", tmp_path / "prepared"], capsys)  # fmt: skip
    assert "would replace its input" in line
    model = model_file(tmp_path / "best.pth")
    argv = ["--model", model, "--prepared", tmp_path, "--palette", tmp_path / "p.json", "--split",
            "val", "--out-json", tmp_path / "m", "--out-csv", tmp_path / "m"]  # fmt: skip
    assert f"{tmp_path / 'm'}: given for two outputs" in refused(evaluate.main, argv, capsys)


def test_running_out_of_memory_is_one_line(capsys):
    @cli
    def main(argv=None):
        raise MemoryError("Unable to allocate 27.9 GiB for an array with shape (100000, 100000, 3)")

    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "error: test_hostile_round4: out of memory (Unable to allocate 27.9 GiB for an array "
        "with shape (100000, 100000, 3))"
    ]



def test_no_warmup_trains_without_mmengines_empty_range_error():
    """``train.warmup_iters: 0`` (the schema allows it) was MMEngine's 'end should be larger than
    begin' traceback: the warm-up is left out instead."""
    import torch
    from mmengine.optim import LinearLR

    from camvidseg.core import settings
    from camvidseg.training.train import lr_schedule

    def kinds(warmup):
        return [s["type"] for s in lr_schedule(settings.resolve("train", {"warmup_iters": warmup}))]

    assert kinds(4) == ["LinearLR", "PolyLR"] and kinds(0) == ["PolyLR"]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="end should be larger than begin"):
        LinearLR(optimizer, by_epoch=False, begin=0, end=0)  # why 0 cannot be a warm-up
