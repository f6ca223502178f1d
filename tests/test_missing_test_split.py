"""Datasets with train and val only (the SegNet train+val copy; Cityscapes-like copies whose test
labels are withheld) run the whole chain: the test split is scored on nothing, and the log, the
metrics, the summary and the model card say so, with no number in its place."""

import csv
import json
import shutil
import tarfile

import pytest
import yaml
from conftest import TINY, segnet_layout, snakemake

STEMS = ("0001TP_000010", "0001TP_000020", "0001TP_000030", "0001TP_000040")


def dataset_folder(root, test: str):
    """A SegNet-layout folder at 48x64; ``test``: ``absent`` (no test/ nor testannot/),
    or ``unlabelled`` (test images, no testannot/). Test labels that are all void (Cityscapes'
    withheld ones) are tests/test_units.py's: evaluate finds no labelled pixel."""
    segnet_layout(root, STEMS, size=(48, 64))
    shutil.rmtree(root / "testannot")
    if test == "absent":
        shutil.rmtree(root / "test")
    return root


# What the scoring of a missing test split reaches, without the ONNX export and the model card
# (the first test checks those; the card says the same for every reason).
SCORES = ("results/metrics/test.json", "results/metrics/summary.csv")


def run_chain(tmp_path, path, *targets):
    config = yaml.safe_load(TINY.read_text())
    config["dataset"] = {"source": "local", "path": str(path), "layout": "segnet11"}
    config["train"]["epochs"] = 1
    configfile = tmp_path / "trainval.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work"
    snakemake(workdir, *targets, configfile=configfile)
    return workdir / "results"


def assert_test_not_scored(results, reason: str):
    test = json.loads((results / "metrics/test.json").read_text())
    assert test["scored"] is False and reason in test["reason"]
    assert test["mIoU"] is None and test["per_class"] == [] and test["pixels_scored"] == 0
    assert f"test: not scored: {test['reason']}" in (results / "logs/evaluate_test.log").read_text()
    val = json.loads((results / "metrics/val.json").read_text())
    assert val["scored"] is True and 0 <= val["mIoU"] <= 1
    with (results / "metrics/summary.csv").open() as handle:
        rows = {row["split"]: row for row in csv.DictReader(handle)}
    assert rows["test"]["mIoU"] == "" and rows["test"]["note"] == f"not scored: {test['reason']}"
    assert float(rows["val"]["mIoU"]) == round(val["mIoU"], 4) and rows["val"]["note"] == ""
    assert "test IoU" not in (results / "metrics/summary.html").read_text()
    return test


def assert_card_scores_nothing_on_test(results, test: dict):
    card = (results / "model/MODEL_CARD.md").read_text()
    assert f"**test: not scored** ({test['reason']})." in card
    assert "| val IoU |" in card and "test IoU" not in card
    assert "| test |" not in card  # no score row for it


@pytest.mark.slow
def test_folder_without_test_split_runs_the_chain_and_scores_nothing_on_test(tmp_path):
    results = run_chain(tmp_path, dataset_folder(tmp_path / "CamVid", "absent"))
    extract_log = (results / "logs/extract.log").read_text()
    assert "test split left out: no test/ or testannot/ folder in" in extract_log
    assert "splits: {'train': 4, 'val': 4} (8 images)" in extract_log
    test = assert_test_not_scored(results, "no test/ or testannot/ folder")
    assert_card_scores_nothing_on_test(results, test)
    card = (results / "model/MODEL_CARD.md").read_text()
    assert "| test split | left out: no test/ or testannot/ folder in" in card
    assert (
        "test: no pictures: left out of the dataset" in (results / "logs/visualize.log").read_text()
    )
    assert not list((results / "vis_data").glob("test_*"))
    assert list((results / "vis_data").glob("val_*_panel.png"))


@pytest.mark.slow
def test_archive_whose_test_split_has_no_labels_is_scored_on_nothing(tmp_path):
    """A Cityscapes-like copy: test images without their label folder, as a .tar.gz."""
    folder = dataset_folder(tmp_path / "src" / "CamVid", "unlabelled")
    archive = tmp_path / "camvid.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="CamVid")
    results = run_chain(tmp_path, archive, *SCORES)
    test = assert_test_not_scored(results, "has no labels (testannot/ missing)")
    assert test["images"] == 0
