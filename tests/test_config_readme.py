"""config/README.md describes every config key, as generated from the schema."""

import re
import subprocess
import sys

import yaml
from conftest import REPO

from camvidseg.core.settings import schema


def leaf_keys(node: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, sub in node.get("properties", {}).items():
        dotted = f"{prefix}.{key}" if prefix else key
        nested = sub.get("type") == "object" and "properties" in sub
        keys |= leaf_keys(sub, dotted) if nested else {dotted}
    return keys


def test_config_readme_is_what_the_generator_writes_from_the_schema():
    page = (REPO / "config/README.md").read_text()
    code = "import runpy; print(runpy.run_path('tools/config_readme.py')['render'](), end='')"
    generated = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert page == generated, "config/README.md is stale: run python tools/config_readme.py"


def test_config_readme_describes_every_key_with_its_default():
    page = (REPO / "config/README.md").read_text()
    documented = dict(re.findall(r"^\| `([\w.]+)` \| .*? \| (`.*?`) \| (?:.+) \|$", page, re.M))
    keys = leaf_keys(schema())
    assert set(documented) == keys
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert documented["train.lr"] == "`0.0002`" and config["train"]["lr"] == 0.0002


def test_catalog_file_declares_the_standardized_usage():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = catalog["usage"]
    assert usage["software-stack-deployment"]["conda"] is True
    assert usage["report"] is True
    assert "--configfile" in usage["mandatory-flags"]["flags"]
