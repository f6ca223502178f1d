"""The conda env files and pyproject.toml agree with the one place versions are pinned
(requirements.txt); runtime and dev tools are apart; every pin is used by the code."""

import ast
import importlib.metadata
import re

import yaml
from conftest import REPO, make_plan


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
        "matplotlib",
        "onnx",
        "onnxscript",
        "onnxruntime",
        "pyyaml",
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


def test_pyproject_declares_ranges_that_hold_every_pin():
    from packaging.requirements import Requirement
    from setuptools.config.pyprojecttoml import read_configuration

    project = read_configuration(REPO / "pyproject.toml", expand=True)["project"]
    declared = {r.name.lower(): r.specifier for r in map(Requirement, project["dependencies"])}
    pinned = pins((REPO / "requirements.txt").read_text().splitlines())
    assert declared.keys() == pinned.keys()
    for name, version in pinned.items():
        specifier = declared[name]
        assert version in specifier, f"{name}=={version} (requirements.txt) outside {specifier}"
        # A range, not a pin in disguise: it admits a later release of the same series.
        assert not any(s.operator == "==" for s in specifier), f"{name} is pinned in pyproject"
        assert any(s.operator == "<" for s in specifier), f"{name} has no upper bound"
    assert project["license"] == "Apache-2.0"
    assert "Apache License" in (REPO / "LICENSE").read_text()[:200]


def test_dev_tools_are_pinned_apart_from_the_runtime():
    runtime = pins((REPO / "requirements.txt").read_text().splitlines())
    dev = pins((REPO / "requirements-dev.txt").read_text().splitlines())
    assert {"pytest", "ruff", "snakefmt", "playwright"} <= dev.keys()
    assert not dev.keys() & runtime.keys()
    # `make` (a fresh clone's only setup, CI included) installs both files.
    plan = make_plan("-W", "requirements.txt", "demo")
    assert "pip install --quiet -r requirements.txt -r requirements-dev.txt" in plan
    assert "--index-url" not in plan


def test_older_drivers_get_another_torch_build_only_when_asked():
    plan = make_plan("-W", "requirements.txt", "demo", "TORCH_INDEX=https://example.org/cu126")
    assert "pip install --quiet --index-url https://example.org/cu126 $(grep -E" in plan


def imported_modules() -> tuple[set[str], set[str]]:
    """Top-level third-party modules the package imports: (required, optional), optional being
    those imported inside ``try: ... except ImportError``."""
    required, optional = set(), set()
    for path in (REPO / "src/camvidseg").rglob("*.py"):
        tree = ast.parse(path.read_text())
        guarded = {
            id(node)
            for handler in ast.walk(tree)
            if isinstance(handler, ast.Try)
            and any("ImportError" in ast.unparse(h.type or ast.Name("")) for h in handler.handlers)
            for stmt in handler.body
            for node in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                (optional if id(node) in guarded else required).add(name.split(".")[0])
    stdlib = set(__import__("sys").stdlib_module_names) | {"__future__"}
    return required - stdlib, optional - stdlib - required


# Pinned but imported by no module of the package, and why they are needed all the same.
USED_INDIRECTLY = {
    "snakemake": "runs the workflow",
    "snakemake-executor-plugin-slurm": "the SLURM profile's executor",
    "onnxscript": "torch.onnx's dynamo exporter imports it (export rule)",
    "tensorboard": "MMEngine's TensorboardVisBackend writes the train rule's event files",
}


def test_every_import_is_pinned_and_every_pin_is_used():
    runtime = pins((REPO / "requirements.txt").read_text().splitlines())
    distributions = importlib.metadata.packages_distributions()
    required, optional = imported_modules()

    def dist(module):
        """The distribution that provides ``module``: the pinned one where several do (mlflow and
        mlflow-skinny both install ``mlflow``)."""
        names = [name.lower() for name in distributions[module]]
        return next((name for name in names if name in runtime), names[0])

    # workflow.plan runs inside Snakemake's parse and uses what Snakemake itself requires
    with_snakemake = {
        re.split(r"[<>=!;\[ ]", r)[0].lower() for r in importlib.metadata.requires("snakemake")
    }
    for module in required:
        pinned = dist(module) in runtime or (
            "snakemake" in runtime and dist(module) in with_snakemake
        )
        assert pinned, f"{module} is imported but {dist(module)} is not pinned"
    used = {dist(m) for m in required | optional} | set(USED_INDIRECTLY)
    assert set(runtime) <= used, f"pinned but imported by no code: {set(runtime) - used}"


def test_mmengine_internals_are_written_against_the_pinned_release():
    """resume.py, the one module reaching into MMEngine's private loop counters, names the
    release it was written for: the pin and the installed package must be that release."""
    from camvidseg.training.resume import MMENGINE_VERSION

    required = pins((REPO / "requirements.txt").read_text().splitlines())
    assert required["mmengine-lite"] == MMENGINE_VERSION
    assert importlib.metadata.version("mmengine-lite") == MMENGINE_VERSION
