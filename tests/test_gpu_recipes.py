"""The GPU recipes for the full SegNet copy of CamVid (config/camvid_segnet_gpu*.yaml) pass the
schema and plan the whole chain on one GPU (a dry run: nothing trains)."""

import json

import pytest
import yaml
from conftest import REPO, jobs_planned, segnet_layout, snakemake


@pytest.mark.parametrize(
    ("recipe", "epochs", "fetches_weights"),
    [("camvid_segnet_gpu.yaml", 150, True), ("camvid_segnet_gpu_scratch.yaml", 400, False)],
)
def test_gpu_recipe_validates_and_plans_training_on_one_gpu(
    tmp_path, recipe, epochs, fetches_weights
):
    config = yaml.safe_load((REPO / "config" / recipe).read_text())
    assert config["model"]["name"] == "deeplabv3_resnet50"
    assert config["train"]["crop_size"] == [360, 480]
    data = segnet_layout(tmp_path / "CamVid")
    result = snakemake(
        tmp_path / "work", "-n", "--resources", "gpu=1",
        "--config", f"dataset={{path: {json.dumps(str(data))}}}",
        configfile=REPO / "config" / recipe,
    )  # fmt: skip
    jobs = jobs_planned(result)
    assert jobs["train"] == 1 and jobs["evaluate"] == 2  # val and test
    assert ("fetch_backbone_weights" in jobs) == fetches_weights
    assert f"Training deeplabv3_resnet50 for {epochs} epochs on cuda (1 GPUs requested)" in (
        result.stdout
    )
