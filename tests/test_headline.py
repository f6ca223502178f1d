"""The headline the report opens on: the scores of the run (the best experiment's), per-class IoU
bars, one panel and the leaderboard, from the files the workflow lays out."""

import csv
import json
import re

import pytest
from conftest import assert_one_line_error, run_cli
from PIL import Image


def write_run(folder, val_miou: float, test_scored: bool = True, panels=("val_b", "val_a")):
    (folder / "metrics").mkdir(parents=True)
    per_class = [{"class": "Road", "IoU": 0.9}, {"class": "Sky & Car", "IoU": 0.25},
                 {"class": "Animal", "IoU": None}]  # fmt: skip
    val = {"scored": True, "mIoU": val_miou, "num_classes_scored": 2, "per_class": per_class,
           "epoch": 7, "model": "lraspp_mobilenet_v3_large", "precision": "fp32"}  # fmt: skip
    (folder / "metrics/val.json").write_text(json.dumps(val))
    test = val | {"mIoU": 0.5} if test_scored else {"scored": False, "reason": "no labels"}
    (folder / "metrics/test.json").write_text(json.dumps(test))
    (folder / "vis_data").mkdir()
    for name in panels:
        Image.new("RGB", (30, 10), (200, 0, 0)).save(folder / "vis_data" / f"{name}_panel.png")
    return folder


def headline(tmp_path, *runs, leaderboard=None):
    out = tmp_path / "headline.html"
    flags = ["--leaderboard", leaderboard] if leaderboard else []
    result = run_cli("headline", "--runs", *runs, "--splits", "val", "test", *flags, "--out", out,
                     check=False)  # fmt: skip
    return result, out


def test_one_run_leads_with_its_scores_bars_and_first_panel(tmp_path):
    run = write_run(tmp_path / "results", 0.71234)
    result, out = headline(tmp_path, run)
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert page.startswith("<section id='camvidseg-headline'>")
    assert "val mIoU <b class='miou'>0.7123</b> · test mIoU <b class='miou'>0.5000</b>" in page
    assert "2 of 3 classes scored" in page and "best epoch 7" in page
    bars = re.findall(r"<tr><th>([^<]+)</th><td[^>]*><div class='bar' style='width:([\d.]+)%'",
                      page)  # fmt: skip
    assert bars == [("Road", "90.0"), ("Sky &amp; Car", "25.0")]  # escaped; Animal not scored
    assert page.count("data:image/png;base64,") == 1 and "val_a: image | prediction" in page
    assert "Leaderboard" not in page
    assert (tmp_path / ".headline.html.made.json").is_file()


def test_an_unscored_split_says_why_instead_of_a_number(tmp_path):
    run = write_run(tmp_path / "results", 0.6, test_scored=False)
    result, out = headline(tmp_path, run)
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert "test: not scored (no labels)" in page and "test mIoU" not in page


def test_with_experiments_the_best_leads_and_the_leaderboard_follows(tmp_path):
    root = tmp_path / "results/experiments"
    worse, better = write_run(root / "lr_a", 0.4), write_run(root / "lr_b", 0.8)
    leaderboard = tmp_path / "leaderboard.csv"
    with leaderboard.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["experiment", "train.lr", "val_mIoU", "test_mIoU", "best_epoch"])
        writer.writerow(["lr_b", "0.01", "0.8000000001", "0.5", "7"])
        writer.writerow(["lr_a", "0.001", "0.4", "0.5", "7"])
    result, out = headline(tmp_path, worse, better, leaderboard=leaderboard)
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert "Scores of the best experiment, lr_b" in page and "<b class='miou'>0.8000</b>" in page
    table = page.split("<table id='leaderboard'>")[1]
    assert table.index("lr_b") < table.index("lr_a") and "<td>0.8000</td>" in table


@pytest.mark.parametrize("problem", ["two runs without a leaderboard", "best not among runs"])
def test_a_headline_that_cannot_be_chosen_is_one_line(tmp_path, problem):
    runs = [write_run(tmp_path / name, 0.5) for name in ("a", "b")]
    leaderboard = None
    if problem == "best not among runs":
        leaderboard = tmp_path / "leaderboard.csv"
        leaderboard.write_text("experiment,val_mIoU\nc,0.9\n")
    result, out = headline(tmp_path, *runs, leaderboard=leaderboard)
    expected = "which one leads" if leaderboard is None else "best experiment 'c' is not among"
    assert_one_line_error(result, expected)
    assert not out.exists()
