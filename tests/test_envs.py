"""The conda env files agree with the one place versions are pinned (requirements.txt)."""

import re

import yaml
from conftest import REPO


def pins(lines):
    found = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s#]+)\s*", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_training_env_matches_requirements():
    required = pins((REPO / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "envs/camvidseg.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = pins(pip)
    assert listed, "envs/camvidseg.yaml pins nothing"
    for name, version in listed.items():
        assert required.get(name) == version, (
            f"{name}: env {version}, requirements {required.get(name)}"
        )
    runtime = {
        "torch",
        "torchvision",
        "mmengine-lite",
        "opencv-python-headless",
        "numpy",
        "pillow",
        "pandas",
        "matplotlib",
        "onnx",
        "onnxscript",
        "onnxruntime",
    }
    assert runtime <= listed.keys()


def test_download_env_matches_its_requirements():
    required = pins((REPO / "requirements-download.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "envs/download.yaml").read_text())
    pip = pins(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)))
    for name, version in required.items():
        assert pip.get(name) == version
    main = pins((REPO / "requirements.txt").read_text().splitlines())
    for name in ("numpy", "pillow"):
        assert pip[name] == main[name]
    assert "torch" not in pip  # the dataset CLIs' old pins never meet the training stack


def test_every_rule_has_log_conda_and_message():
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        text = smk.read_text()
        for rule in re.split(r"\n\s*rule ", text)[1:]:
            name = rule.split(":")[0]
            for directive in ("log:", "conda:", "message:"):
                assert directive in rule, f"{smk.name}: rule {name} lacks {directive}"


def test_deploy_env_matches_its_requirements_and_has_no_torch():
    required = pins((REPO / "requirements-deploy.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "envs/deploy.yaml").read_text())
    pip = pins(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)))
    assert pip == required
    main = pins((REPO / "requirements.txt").read_text().splitlines())
    for name, version in required.items():
        assert main.get(name) == version, f"{name}: deploy {version}, requirements {main.get(name)}"
    assert {"onnxruntime", "numpy", "pillow"} <= pip.keys()
    assert not {"torch", "torchvision", "mmengine-lite", "opencv-python-headless"} & pip.keys()
