"""The workflow itself: a real Snakemake run of the whole chain, caching and re-run rules."""

import json
import os

import numpy as np
from conftest import REPO, jobs_planned, snakemake
from PIL import Image


def test_whole_chain_outputs(tiny_run):
    metrics = json.loads((tiny_run / "results/metrics/val.json").read_text())
    for key in ("mIoU", "mAcc", "aAcc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert len(metrics["per_class"]) == 31  # 32 CamVid classes less Void
    assert {"Sky", "Road", "Car"} <= {c["class"] for c in metrics["per_class"]}
    assert (tiny_run / "results/metrics/test.json").is_file()
    assert (tiny_run / "results/metrics/test_per_class.csv").read_text().startswith("class,IoU")
    umask = os.umask(0)
    os.umask(umask)
    for folder in ("results/vis_data", "results/data/prepared"):  # made atomically, usual mode
        assert (tiny_run / folder).stat().st_mode & 0o777 == 0o777 & ~umask
    panels = sorted((tiny_run / "results/vis_data").glob("*_panel.png"))
    assert [p.name.split("_")[0] for p in panels] == ["test", "val"]
    width, height = Image.open(panels[0]).size
    assert width > 2 * height  # three pictures side by side
    mask = np.asarray(Image.open(next((tiny_run / "results/data/prepared/masks/train").iterdir())))
    assert mask.dtype == np.uint8 and mask.ndim == 2
    assert (tiny_run / "results/model/best.pth").stat().st_size < 30e6
    for png in ("training_curves", "per_class_iou_val", "confusion_test"):
        assert (tiny_run / f"results/plots/{png}.png").stat().st_size > 5000
    for rule in ("obtain_dataset", "extract", "palette", "convert_masks", "train", "visualize"):
        assert (tiny_run / f"results/logs/{rule}.log").is_file() or rule == "obtain_dataset"


def test_second_run_does_nothing(tiny_run):
    result = snakemake(tiny_run)
    assert "Nothing to be done" in result.stdout + result.stderr


def test_training_parameter_reruns_training_and_downstream_only(tiny_run):
    result = snakemake(tiny_run, "-n", "--config", "train={lr: 0.0005}")
    planned = jobs_planned(result)
    assert {"train", "evaluate", "visualize", "plots", "all"} <= planned.keys()
    assert not {"obtain_dataset", "extract", "palette", "convert_masks"} & planned.keys()


def test_visualization_parameter_reruns_only_visualization(tiny_run):
    result = snakemake(tiny_run, "-n", "--config", "vis={num_images: 2}")
    assert set(jobs_planned(result)) == {"visualize", "provenance", "all"}


def test_code_change_reruns_the_step(tiny_run):
    """Sources are declared inputs: an edited palette.py re-runs palette and what follows."""
    source = REPO / "src/camvidseg/palette.py"
    original, stat = source.read_bytes(), source.stat()
    source.write_bytes(original + b"\n# an edit\n")
    try:
        planned = jobs_planned(snakemake(tiny_run, "-n"))
    finally:
        source.write_bytes(original)
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert {"palette", "convert_masks", "train", "evaluate"} <= planned.keys()
    assert not {"obtain_dataset", "extract"} & planned.keys()


def test_default_config_builds_gpu_dag(tmp_path):
    result = snakemake(
        tmp_path, "-n", "--resources", "gpu=1", configfile=REPO / "config/config.yaml"
    )
    planned = jobs_planned(result)
    assert planned["train"] == 1 and planned["fetch_backbone_weights"] == 1
    assert planned["obtain_dataset"] == 1


def test_default_config_offline_fails_at_download_with_one_line(tmp_path):
    result = snakemake(
        tmp_path,
        "--until",
        "obtain_dataset",
        configfile=REPO / "config/config.yaml",
        check=False,
    )
    assert result.returncode != 0
    log = (tmp_path / "results/logs/obtain_dataset.log").read_text()
    assert "Traceback" not in log
    error_lines = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "dataset.source: local" in error_lines[0]
    assert not (tmp_path / "resources/opendatalab/CamVid.tar.gz").exists()


def test_invalid_config_is_one_line_naming_the_key(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "train={lr: fast}", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "invalid config: train.lr: 'fast' is not of type 'number'" in output
    assert "Traceback" not in output
    result = snakemake(tmp_path, "-n", "--config", "trian={lr: 1}", check=False)
    assert result.returncode != 0
    assert "invalid config: (top level): Additional properties are not allowed ('trian'" in (
        result.stdout + result.stderr
    )


def test_vis_data_target_builds_only_what_pictures_need(tmp_path):
    result = snakemake(tmp_path, "results/vis_data")
    assert len(list((tmp_path / "results/vis_data").glob("*_panel.png"))) == 2
    assert not (tmp_path / "results/metrics").exists()
    assert "rule evaluate" not in result.stdout + result.stderr
