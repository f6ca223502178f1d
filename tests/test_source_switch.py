"""Issue 22.3: switching dataset.source (sample, folder, archive, URL) in any order, with files
older than the last results, retrains whenever the data differs, and only then; a folder whose
pixels were swapped under the same names, sizes and modification times is noticed.

A real project. What a switch must reach is the data chain: once it re-runs, everything made
from the data (training first) is older than its inputs and runs again, and the training
fingerprint (prepared/index.json holds the data's content id) keeps a model of other data from
being resumed. So after each switch the run of `snakemake results/data/prepared` must hold the
extract/index and convert jobs in its job table, and change the data's content id; where nothing
changed, `snakemake -n` plans nothing.
"""

import json
import os
import tarfile

import numpy as np
import pytest
import yaml
from conftest import TINY, ArchiveHandler, archive_server, jobs_planned, snakemake
from PIL import Image

from camvidseg.data.sample import build_sample

SIZES = {"train": 6, "val": 2, "test": 2}
OLD = 978_307_200_000_000_000  # 2001-01-01 in ns: before any result
PREPARED = "results/data/prepared"


def set_old_times(path):
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, ns=(OLD, OLD))


def uncompressed_folder(archive, folder):
    """The archive extracted, every PNG rewritten without compression: its size then depends
    on its dimensions only, so other pixels can take its place at the very same size."""
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    for png in folder.rglob("*.png"):
        Image.open(png).save(png, compress_level=0)
    set_old_times(folder)
    return folder


@pytest.fixture
def server():
    with archive_server() as url:
        yield url


@pytest.mark.slow
def test_any_source_switch_with_old_files_reruns_the_data_chain_and_swapped_pixels_are_seen(
    tmp_path, server
):
    project = tmp_path / "project"
    tiny = yaml.safe_load(TINY.read_text())

    def use(dataset):
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(tiny | {"dataset": dataset}))
        return config

    def jobs(*args, dataset):
        result = snakemake(project, *args, PREPARED, configfile=use(dataset))
        return {} if "Nothing to be done" in result.stdout + result.stderr else jobs_planned(result)

    def plan(dataset):
        return jobs("-n", dataset=dataset)

    def switch_to(dataset, why):
        """The run after the switch re-runs the data chain (its job table: what it planned and
        ran), and leaves a good run before the next."""
        before = content_id()
        ran = jobs(dataset=dataset)
        assert "convert_masks" in ran, f"{why}: the data chain does not re-run ({ran})"
        assert {"extract", "index_dataset"} & ran.keys(), f"{why}: {ran}"
        assert content_id() != before, f"{why}: the training fingerprint keeps the old data's id"

    def content_id():
        return json.loads((project / PREPARED / "index.json").read_text())["content_id"]

    sample = dict(tiny["dataset"])
    snakemake(project, PREPARED, configfile=use(sample))
    assert plan(sample) == {}  # nothing changed: nothing re-runs

    archives = {}
    for seed in (2, 3, 4):
        archives[seed] = tmp_path / f"seed{seed}" / "CamVid.tar.gz"
        build_sample(archives[seed], SIZES, 48, 64, seed=seed)
    folder = uncompressed_folder(archives[2], tmp_path / "folder")
    set_old_times(archives[3])

    switch_to({"source": "local", "path": str(folder)}, "sample -> old folder")
    switch_to({"source": "local", "path": str(archives[3])}, "folder -> old archive")
    ArchiveHandler.payload = archives[4].read_bytes()
    url = {"source": "url", "url": f"{server}/CamVid.tar.gz"}
    switch_to(url, "archive -> URL")
    switch_to({"source": "local", "path": str(folder)}, "URL -> the old folder again")
    switch_to(sample, "folder -> the sample, whose archive is older than the results")
    # The URL's archive is still in resources/ from before, older than the results now.
    set_old_times(project / "resources/CamVid.tar.gz")
    switch_to(url, "sample -> the URL again")
    ArchiveHandler.payload = archives[3].read_bytes()
    switch_to(url | {"url": f"{server}/CamVid.tar.gz?version=2"}, "URL -> another URL")
    switch_to({"source": "local", "path": str(folder)}, "URL -> the folder")

    # Other pixels under the same names, sizes and times: a copy that keeps times (cp -p).
    image = next((folder / "CamVid" / "train").glob("*.png"))
    before = image.stat()
    pixels = np.asarray(Image.open(image))
    Image.fromarray(255 - pixels).save(image, compress_level=0)
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert image.stat().st_size == before.st_size
    switch_to({"source": "local", "path": str(folder)}, "folder with swapped pixels")
    assert plan({"source": "local", "path": str(folder)}) == {}
