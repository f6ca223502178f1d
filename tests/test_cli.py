"""Every stage is a command: `camvidseg --help` lists them, each `--help` answers without torch."""

import json
import subprocess
import sys

import pytest
from conftest import REPO

from camvidseg.workflow import codegraph

# Written out here rather than taken from the code under test.
CHAIN = ["sample", "obtain", "extract", "palette", "convert", "train", "evaluate", "visualize",
         "plots", "predict"]  # fmt: skip
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
    "heavy": sorted({"torch", "mmengine", "matplotlib", "cv2"} & set(sys.modules)),
}))
"""


def camvidseg(*args) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "camvidseg", *args], capture_output=True, text=True, env=env
    )


def test_help_lists_every_stage_with_one_line_each():
    result = camvidseg("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("usage: camvidseg <stage>")
    listed = {}
    for line in lines[lines.index("stages:") + 1 :]:
        name, _, what = line.strip().partition(" ")
        listed[name] = what.strip()
    assert set(CHAIN) <= set(listed), listed
    assert all(len(what) > 10 for what in listed.values()), listed
    assert list(listed)[: len(CHAIN) - 2] == CHAIN[:-2]  # the chain's order first


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
    assert report["heavy"] == []


def test_settings_options_take_default_and_help_from_the_schema():
    help_text = camvidseg("visualize", "--help").stdout
    assert "Opacity of the class colors in overlays" in help_text
    assert "(default: 0.5)" in help_text and "(default: 4)" in help_text
