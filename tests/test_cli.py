"""Every stage is a command: `camvidseg --help` lists them, each `--help` answers without torch."""

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO

from camvidseg.workflow import codegraph

# Written out here rather than taken from the code under test: the workflow's rules in the
# chain's order, then the tools around them.
CHAIN = ["sample", "obtain", "extract", "palette", "convert", "train", "evaluate", "visualize",
         "plots", "export", "card", "predict", "runcost", "leaderboard", "headline", "provenance",
         "compare", "lease"]  # fmt: skip
STAGES = sorted(set(CHAIN) | set(codegraph.stages()))  # and every command added since
COMMANDS = [[stage] for stage in STAGES] + [
    ["obtain", route] for route in ("url", "opendatalab", "openxlab", "weights")
] + [["export"], ["export", "onnx"], ["export", "check"], ["card"]]

# Runs `camvidseg <args> --help` in a fresh interpreter and reports, for every parser that
# parsed, the options without help, its prog, and which heavy libraries got imported.
PROBE = """
import argparse, json, sys
parsers = []
parse = argparse.ArgumentParser.parse_known_args
def recording(self, *args, **kwargs):
    parsers.append(self)
    return parse(self, *args, **kwargs)
argparse.ArgumentParser.parse_known_args = recording
from camvidseg.__main__ import main
sys.argv = ["camvidseg", *sys.argv[1:], "--help"]
try:
    code = main()
except SystemExit as exit:
    code = exit.code
print(json.dumps({
    "code": code,
    "progs": [p.prog for p in parsers],
    "no_help": [a.option_strings or a.dest for p in parsers for a in p._actions if not a.help],
    "required_but_may_be_empty": [a.option_strings for p in parsers for a in p._actions
                                  if a.required and "empty for none" in (a.help or "")],
    "heavy": sorted({"torch", "mmengine", "matplotlib", "cv2"} & set(sys.modules)),
}))
"""


def camvidseg(*args) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "camvidseg", *args], capture_output=True, text=True, env=env
    )


def test_help_lists_every_stage_in_chain_order_with_its_whole_description():
    result = camvidseg("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("usage: camvidseg <stage>")
    listed = {}
    for line in lines[lines.index("stages:") + 1 :]:
        if line.startswith(" " * 15):  # a description wrapped onto the next line
            listed[list(listed)[-1]] += " " + line.strip()
        else:
            name, _, what = line.strip().partition(" ")
            listed[name] = what.strip()
    assert list(listed)[: len(CHAIN)] == CHAIN, list(listed)
    assert all(len(line) <= 100 for line in lines)
    # Whole first sentences of the modules' docstrings, however they wrap there.
    assert listed["leaderboard"].endswith("their per-class IoU as grouped bars"), listed
    assert listed["predict"].endswith("with a legend of the classes found)"), listed
    assert listed["lease"].endswith("-- COMMAND ..."), listed


def test_version_is_the_one_pyproject_and_the_changelog_name():
    from setuptools.config.pyprojecttoml import read_configuration

    result = camvidseg("--version")
    assert result.returncode == 0, result.stderr
    version = read_configuration(REPO / "pyproject.toml", expand=True)["project"]["version"]
    assert result.stdout == f"camvidseg {version}\n"
    changelog = (REPO / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert released and released[0] == version, released  # the newest release first


def test_device_defaults_to_auto_by_hand():
    """By hand a stage runs on the machine it is typed on: the default device is auto (CUDA
    where torch sees a GPU), not the workflow's cuda, which fails on a CPU-only machine."""
    for stage in ("predict", "evaluate", "visualize"):
        help_text = camvidseg(stage, "--help").stdout
        assert "(default: auto)" in " ".join(help_text.split()), stage


def test_unknown_or_missing_stage():
    unknown = camvidseg("trian")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.startswith("error: unknown stage 'trian' (one of sample, obtain")
    assert unknown.stderr.count("\n") == 1
    missing = camvidseg()
    assert missing.returncode == 2 and "usage: camvidseg <stage>" in missing.stderr


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_stage_help_names_the_command_helps_every_option_and_loads_no_torch(args):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["code"] == 0, result.stderr
    assert result.stdout.startswith(f"usage: camvidseg {' '.join(args)} ")
    assert report["progs"][-1] == f"camvidseg {' '.join(args)}"
    assert report["no_help"] == []
    assert report["required_but_may_be_empty"] == []
    assert report["heavy"] == []


def test_settings_options_take_default_and_help_from_the_schema():
    help_text = camvidseg("visualize", "--help").stdout
    assert "Opacity of the class colors in overlays" in help_text
    assert "(default: 0.5)" in help_text and "(default: 4)" in help_text
