"""The import graph: rules declare exactly their stage's import closure as code inputs, stages
import only shared rooms, and docs/architecture.md lists the rooms and stages the code has."""

import ast
import json
import re
import subprocess
import sys

import pytest
from conftest import REPO, TINY
from PIL import Image

from camvidseg.workflow import codegraph

# Loads the workflow through Snakemake's API (nothing runs) and prints, per rule, its shell
# command, its params and the package files among its inputs.
RULES_SCRIPT = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings
snakefile, workdir, configfile, overrides, package = sys.argv[1:]
with SnakemakeApi() as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(
            configfiles=[Path(configfile)], config=json.loads(overrides)
        ),
        snakefile=Path(snakefile),
        workdir=Path(workdir),
    )._workflow  # the parsed rules; no public accessor in Snakemake 9
    rules = {
        rule.name: {
            "shell": rule.shellcmd or "",
            "params": [str(p) for p in rule.params if isinstance(p, str)],
            "code": sorted(f for f in map(str, rule.input) if f.startswith(package)),
        }
        for rule in workflow.rules
    }
print("RULES=" + json.dumps(rules))
"""


def declared_rules(workdir, configfile, overrides) -> dict:
    package = str(codegraph.PACKAGE_DIR)
    result = subprocess.run(
        [sys.executable, "-c", RULES_SCRIPT, str(REPO / "workflow/Snakefile"), str(workdir),
         str(configfile), json.dumps(overrides), package],
        capture_output=True, text=True, check=False, cwd=workdir,
    )  # fmt: skip
    line = next((x for x in result.stdout.splitlines() if x.startswith("RULES=")), None)
    assert line, result.stdout + result.stderr
    return json.loads(line.removeprefix("RULES="))


def test_closure_follows_every_kind_of_import(tmp_path):
    package = tmp_path / "camvidseg"
    package.mkdir()
    sources = {
        "__init__": "LIMIT = 1\n",
        "stage": "from . import LIMIT, helper\n\ndef main():\n    from .lazy import x\n",
        "helper": "import camvidseg.deep\nimport numpy\n",
        "lazy": "from camvidseg import other\nx = 1\n",
        "deep": "",
        "other": "from .deep import nothing\nfrom .sub import inner\n",
        "unused": "import os\n",
        "sub/__init__": "",
        "sub/inner": "from ..deep import nothing\nfrom . import sibling\n",
        "sub/sibling": "from camvidseg.sub.far import x\n",
        "sub/far": "",
    }
    (package / "sub").mkdir()
    for name, text in sources.items():
        (package / f"{name}.py").write_text(text)
    assert codegraph.closure("stage", package) == [
        "__init__", "deep", "helper", "lazy", "other", "stage",
        "sub.__init__", "sub.far", "sub.inner", "sub.sibling",
    ]  # fmt: skip
    assert codegraph.closure("unused", package) == ["__init__", "unused"]


def test_source_digest_changes_with_code_of_the_closure_only(tmp_path):
    package = tmp_path / "camvidseg"
    package.mkdir()
    sources = {"__init__": "", "stage": "from . import room\n", "room": "", "other": ""}
    for name, text in sources.items():
        (package / f"{name}.py").write_text(text)
    before = codegraph.source_digest("stage", package)
    (package / "other.py").write_text("LIMIT = 2  # not imported by the stage\n")
    assert codegraph.source_digest("stage", package) == before
    (package / "room.py").write_text("LIMIT = 2\n")
    assert codegraph.source_digest("stage", package) != before


def test_source_digest_ignores_docstrings_comments_and_help_texts_only(tmp_path):
    package = tmp_path / "camvidseg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    stage = package / "stage.py"
    code = 'def main(p):\n    p.add_argument("--lr", type=float, default={lr}, help={help!r})\n'
    stage.write_text('"""Stage: one."""\n' + code.format(lr=0.1, help="rate"))
    before = codegraph.source_digest("stage", package)
    stage.write_text('"""Stage: an edited docstring."""\n# a comment\n'
                     + code.format(lr=0.1, help="the learning rate"))  # fmt: skip
    assert codegraph.source_digest("stage", package) == before
    stage.write_text('"""Stage: one."""\n' + code.format(lr=0.2, help="rate"))
    assert codegraph.source_digest("stage", package) != before


def scratch_package(tmp_path):
    """A copy of the package's sources to edit (the repository's stay as they are)."""
    copy = tmp_path / "camvidseg"
    for path in codegraph.PACKAGE_DIR.rglob("*.py"):
        target = copy / path.relative_to(codegraph.PACKAGE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    return copy


@pytest.mark.parametrize(
    ("module", "old", "new", "retrains"),
    [
        ("core.progress", "ETA", "eta", False),  # the progress line
        ("core.command", "best.pth from training", "the trained model", False),  # a help text
        ("data.colors", "alpha) * image", "alpha) * 0.5 * image", False),  # overlays' colors
        ("training.train", "weights-only best model", "the best weights", False),  # its own help
        ("training.model", "self.aux_loss_weight * aux", "2 * self.aux_loss_weight * aux", True),
        ("data.dataset", "image[:, ::-1], mask[:, ::-1]", "image[::-1], mask[::-1]", True),
        ("data.palette", "def class_names", "def class_names_", True),
    ],
)
def test_training_fingerprint_changes_with_computing_code_only(
    tmp_path, module, old, new, retrains
):
    """Checkpoints are resumed by this digest: a cosmetic edit must keep it, a real one not."""
    package = scratch_package(tmp_path)
    before = codegraph.source_digest("train", package)
    source = codegraph.path_of(module, package)
    assert old in source.read_text(), (module, old)
    source.write_text(source.read_text().replace(old, new))
    assert (codegraph.source_digest("train", package) != before) == retrains


def test_presentation_modules_are_used_for_what_they_show_only():
    """Left out of code inputs and fingerprints, so nothing may compute with them: other modules
    use only their listed names, and they import no package module but the settings they show."""
    rooms, stages = set(codegraph.ROOMS), set(codegraph.stages())
    for module in codegraph.PRESENTATION:
        assert module in rooms and module not in stages, module
        allowed = {"core.settings", "core.errors", "core.__init__", "__init__"}
        assert codegraph.imports(module) <= allowed, module
    for module in codegraph.modules():
        for shown, used in presentation_names_used(module).items():
            unlisted = used - set(codegraph.PRESENTATION[shown])
            assert not unlisted, f"{module} uses {sorted(unlisted)} of presentation-only {shown}"


def presentation_names_used(module: str) -> dict[str, set[str]]:
    """Presentation module -> the names ``module`` takes from it (imported, or ``alias.name``)."""
    tree = ast.parse(codegraph.path_of(module).read_text())
    used: dict[str, set[str]] = {}
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        for alias in node.names:
            one = ast.ImportFrom(module=node.module, names=[alias], level=node.level)
            for target in codegraph._targets(module, one, codegraph.PACKAGE_DIR):
                if target not in codegraph.PRESENTATION:
                    continue
                if target.rsplit(".", 1)[-1] == alias.name:  # the module itself, by name
                    aliases[alias.asname or alias.name] = target
                else:
                    used.setdefault(target, set()).add(alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) in aliases:
            used.setdefault(aliases[node.value.id], set()).add(node.attr)
    used.pop(module, None)
    return used


def test_train_closure_includes_what_it_imports_inside_functions():
    assert {
        "core.device", "training.resume", "training.model", "data.dataset",
        "evaluation.metrics", "data.palette",
    } <= set(codegraph.closure("train"))  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["tiny", "folder_and_predict", "default_config"],
)
def test_rules_declare_the_import_closure_of_the_stage_they_run(case, tmp_path, sample_archive):
    configfile, overrides = TINY, {}
    if case == "folder_and_predict":
        (tmp_path / "data").mkdir()
        (tmp_path / "new_images").mkdir()
        Image.new("RGB", (8, 6)).save(tmp_path / "new_images" / "a.png")  # the rule needs one
        overrides = {
            "dataset": {"source": "local", "path": str(tmp_path / "data")},
            "predict": {"input_dir": str(tmp_path / "new_images")},
        }
    elif case == "default_config":
        configfile = REPO / "config/config.yaml"
    rules = declared_rules(tmp_path, configfile, overrides)
    expected_rules = {
        "tiny": {"obtain_dataset", "extract", "convert_masks", "train", "provenance"},
        "folder_and_predict": {"index_dataset", "predict"},
        "default_config": {"fetch_backbone_weights", "obtain_dataset"},
    }[case]
    assert expected_rules <= rules.keys()
    for name, rule in rules.items():
        commands = " ".join([rule["shell"], *rule["params"]])
        # `camvidseg lease` only picks GPUs, then execs the stage: the stage's closure counts.
        modules = set(re.findall(r"-m camvidseg (\w+)", commands)) - {"lease"}
        if not modules:
            assert not rule["code"], name
            continue
        assert len(modules) == 1, (name, modules)
        expected = sorted(str(p) for p in codegraph.code_files(modules.pop()))
        assert rule["code"] == expected, name


def test_stages_import_only_rooms():
    modules = codegraph.modules()
    stages = set(codegraph.stages().values())
    rooms = set(codegraph.ROOMS)
    unplaced = sorted(set(modules) - stages - rooms)
    assert not unplaced, f"neither a stage (no main) nor listed in codegraph.ROOMS: {unplaced}"
    for module in modules:
        outside = sorted(codegraph.imports(module) - rooms)
        assert not outside, f"{module} imports {outside}, which are not rooms"
    for room in rooms & set(modules):
        assert room == "data.palette" or room not in stages, f"room {room} has a main"


def test_parse_time_rooms_use_the_standard_library_only():
    """The Snakefile imports plan, codegraph and identity while it parses, in Snakemake's
    interpreter (which has PyYAML, and jsonschema imported inside functions: Snakemake needs
    both)."""
    parse_time = (
        "__init__", "core.__init__", "core.errors", "core.fileio", "core.settings",
        "data.__init__", "data.identity", "workflow.__init__", "workflow.codegraph",
        "workflow.experiments", "workflow.plan",
    )  # fmt: skip
    for module in parse_time:
        tree_imports = re.findall(
            r"^(?:from|import) (\S+)", codegraph.path_of(module).read_text(), re.M
        )
        standard = sys.stdlib_module_names | {"__future__", "yaml"}
        absolute = [m for m in tree_imports if not m.startswith(".")]  # package: checked below
        third_party = [m for m in absolute if m.split(".")[0] not in standard]
        assert not third_party, (module, third_party)
        assert codegraph.imports(module) <= set(parse_time), module


def listed(doc: str, heading: str) -> set[str]:
    paragraph = re.search(rf"^{heading}: (.*?)(?:\n\n|\Z)", doc, re.S | re.M)
    assert paragraph, f"docs/architecture.md has no '{heading}:' paragraph"
    items = re.sub(r"\([^)]*\)", "", paragraph.group(1))  # what each room owns, in parentheses
    return set(re.findall(r"`([\w.]+)`", items))


def test_architecture_doc_lists_the_rooms_and_stages_of_the_code():
    doc = (REPO / "docs/architecture.md").read_text()
    assert listed(doc, "Rooms") == set(codegraph.ROOMS)
    assert listed(doc, "Stages") == set(codegraph.stages())
    assert len(doc.split("## Layout")[0].splitlines()) <= 80, "keep it to one page"


def test_no_function_in_the_package_is_over_60_lines():
    """Small functions (the developers' guide): every function and method of src/camvidseg/,
    decorators and docstring included, fits in 60 lines."""
    long = []
    for path in sorted((REPO / "src/camvidseg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - first + 1 > 60:
                    long.append(f"{path.name}:{node.lineno} {node.name}")
    assert not long, long
