"""The workflow itself: a real Snakemake run of the whole chain, caching and re-run rules."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, TINY, edited_source, jobs_planned, snakemake, snakemake_call
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
    # and the headline, which shows the first panel
    assert set(jobs_planned(result)) == {"visualize", "headline", "provenance", "all"}


def test_code_change_reruns_the_step(tiny_run):
    """Sources are declared inputs: an edited palette.py re-runs palette and what follows."""
    with edited_source("data.palette"):
        planned = jobs_planned(snakemake(tiny_run, "-n"))
    assert {"palette", "convert_masks", "train", "evaluate"} <= planned.keys()
    assert not {"obtain_dataset", "extract"} & planned.keys()


@pytest.mark.parametrize("module", ["core.progress", "core.command"])
def test_presentation_edit_reruns_nothing(tiny_run, module):
    """The progress line and the command line's help are no stage's code input (codegraph)."""
    with edited_source(module):
        result = snakemake(tiny_run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr, jobs_planned(result)


def test_model_code_edit_reruns_training_and_what_follows_only(tiny_run):
    with edited_source("training.model"):
        planned = jobs_planned(snakemake(tiny_run, "-n"))
    assert {"train", "evaluate", "visualize", "plots"} <= planned.keys()
    assert not {"obtain_dataset", "extract", "palette", "convert_masks"} & planned.keys()


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


@pytest.mark.slow
def test_vis_data_target_builds_only_what_pictures_need(tmp_path):
    result = snakemake(tmp_path, "results/vis_data")
    assert len(list((tmp_path / "results/vis_data").glob("*_panel.png"))) == 2
    assert not (tmp_path / "results/metrics").exists()
    assert "rule evaluate" not in result.stdout + result.stderr


def test_yaml_1_1_exponents_and_cli_lists_are_typed_by_the_schema(tmp_path):
    config = tmp_path / "typed.yaml"
    config.write_text(TINY.read_text().replace("lr: 0.001", "lr: 1e-3\n  amp: 'false'"))
    result = snakemake(tmp_path, "-n", "-p", "--config", "train={crop_size: [96, 128]}",
                       configfile=config)  # fmt: skip
    settings = json.loads(re.search(r"--settings '(\{.*?\})'", result.stdout).group(1))
    assert settings["train"]["lr"] == 0.001 and settings["train"]["amp"] is False
    assert settings["train"]["crop_size"] == [96, 128]


@pytest.mark.parametrize("section", ["eval", "vis"])
def test_empty_split_list_is_a_one_line_config_error(tmp_path, section):
    result = snakemake(tmp_path, "-n", "--config", f"{section}={{splits: []}}", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert f"invalid config: {section}.splits: [] should be non-empty" in output


def gpus_requested(result) -> int:
    return int(re.search(r"Training .* \((\d+) GPUs requested\)", result.stdout).group(1))


def test_gpu_requests_come_from_the_config_not_the_parsing_host(tmp_path):
    """No nvidia-smi on the parsing host: device cuda still asks for train.gpus; a host that has
    one does not make device auto ask for any (auto is decided inside the job)."""
    system = "/usr/bin:/bin"
    assert shutil.which("nvidia-smi", path=system) is None
    command, env = snakemake_call(tmp_path, "-n", "--config", "train={device: cuda, gpus: 2}")
    result = subprocess.run(command, capture_output=True, text=True, check=True,
                            env=env | {"PATH": system})  # fmt: skip
    assert gpus_requested(result) == 2
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho GPU 0: H100\n")
    (fake / "nvidia-smi").chmod(0o755)
    command, env = snakemake_call(tmp_path, "-n", "--config", "train={device: auto}")
    result = subprocess.run(command, capture_output=True, text=True, check=True,
                            env=env | {"PATH": f"{fake}{os.pathsep}{env['PATH']}"})  # fmt: skip
    assert gpus_requested(result) == 0


HOSTILE = "it's a \"quoted\" $(touch PWNED) dir"


@pytest.mark.slow
def test_hostile_paths_reach_no_shell_and_an_unactivated_venv_runs_the_chain(
    tmp_path, sample_archive
):
    """Paths with spaces, quotes and $(...) are data, never shell; `.venv/bin/snakemake` run
    with a PATH that has no venv python (nor any `python`) completes the run."""
    data = tmp_path / HOSTILE
    data.mkdir()
    shutil.copy(sample_archive, data / "camvid.tar.gz")
    images = tmp_path / "new $(touch PWNED) frames"  # no quote to unbalance: it would run
    images.mkdir()
    Image.new("RGB", (48, 32), (128, 64, 0)).save(images / "frame one.png")
    config = yaml.safe_load(TINY.read_text())
    config["dataset"] = {"source": "local", "path": str(data / "camvid.tar.gz")}
    config["predict"] = {"input_dir": str(images)}
    config["train"]["epochs"] = 1
    (tmp_path / "hostile.yaml").write_text(yaml.safe_dump(config))
    workdir = tmp_path / f"work {HOSTILE}"
    workdir.mkdir()
    snakemake_script = Path(sys.executable).parent / "snakemake"
    command = [str(snakemake_script), "-s", str(REPO / "workflow/Snakefile"), "-d", str(workdir),
               "--configfile", str(tmp_path / "hostile.yaml"), "--cores", "2"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900,
                            cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((workdir / "results/metrics/val.json").read_text())["split"] == "val"
    assert (workdir / "results/predict/frame one_overlay.png").is_file()
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists()


def shell_templates() -> dict[str, str]:
    """Every shell command template of the workflow, by where it is: the literal lines after each
    rule's `shell:`, and the per-source obtain commands in common.smk."""
    templates = {}
    for path in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = path.read_text()
        blocks = re.findall(r"^\s*shell:\s*\n((?:\s*(?:\"|').*\n)+)", text, re.M)
        blocks += re.findall(r"^OBTAIN_COMMANDS = \{\n(.*?)^\}", text, re.M | re.S)
        for number, block in enumerate(blocks):
            templates[f"{path.name}#{number}"] = "".join(re.findall(r"[\"'](.*?)[\"']\s*$", block,
                                                                     re.M))  # fmt: skip
    return templates


def test_every_value_in_every_shell_command_is_quoted():
    templates = shell_templates()
    assert len(templates) >= 15 and any("obtain url" in t for t in templates.values())
    for where, template in templates.items():
        fields = re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", template)
        assert fields, where
        unquoted = [field for field in fields if not field.endswith(":q")]
        assert not unquoted, (where, unquoted)
