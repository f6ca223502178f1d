"""The README's score tables are real runs' output.

tools/readme_tables.py keeps a run's scores (split metrics JSONs, or a sweep's leaderboard) and
provenance record in docs/results/<table>/ and renders the table from them. Here: each README
table equals that rendering; the kept scores are byte for byte what the recorded run wrote (the
record's output hashes); and the demo's record is of this code, these package versions and
config/demo.yaml's settings. Where it is not (someone changed training, the data stages or the
demo config without regenerating the table), the demo runs again here and its table must equal
the README's: slow only until the table is regenerated. The real-data table (a run, or one of
a sweep's experiments) must be of the recipe config/camvid_segnet.yaml gives `make real-data`.
"""

import importlib
import itertools
import json
import shlex
import sys
import warnings

import pytest
from conftest import REPO, edited_source, segnet_layout, snakemake, sources_stable
from test_real_data_route import CONFIG as SEGNET_CONFIG
from test_real_data_route import real_data_args

from camvidseg.data.identity import HashCache, content_id
from camvidseg.reporting import provenance
from camvidseg.workflow import codegraph, madeby

sys.path.insert(0, str(REPO / "tools"))
import readme_tables

DEMO_CONFIG = REPO / "config/demo.yaml"
TABLES = ["demo", "real-data", "real-data-sweep"]
SPLIT_FILES = {"metrics/val.json", "metrics/test.json"}
SWEEP_FILES = {"leaderboard.md", "leaderboard.csv"}
REGENERATE = {
    "demo": "make demo, then python tools/readme_tables.py demo results",
    "real-data": "make real-data CAMVID=../shared/data/camvid-segnet-trainval, then "
    "python tools/readme_tables.py real-data results",
    "real-data-sweep": "the sweep command in the README's Experiments section, then "
    "python tools/readme_tables.py real-data-sweep results",
}


def kept_files(name: str) -> dict[str, object]:
    """Where each kept file was in the run's folder (``metrics/val.json``) -> the kept copy."""
    kept = readme_tables.KEPT / name
    if name in readme_tables.LEADERBOARDS:
        return {file: kept / file for file in readme_tables.LEADERBOARD_FILES}
    return {f"metrics/{p.name}": p for p in (kept / "metrics").glob("*.json")}


def kept_record(name: str) -> dict:
    return json.loads((readme_tables.KEPT / name / "provenance.json").read_text())


def upstream_of_kept(name: str) -> dict[str, dict]:
    """The kept record's stages that the kept scores come from: the jobs that wrote them and
    every job before those."""
    stages = kept_record(name)["stages"]
    wanted = {content_id(path) for path in kept_files(name).values()}
    todo = [stage for stage, entry in stages.items() if wanted & set(entry["outputs"].values())]
    found: dict[str, dict] = {}
    while todo:
        stage = todo.pop()
        if stage not in found:
            found[stage] = stages[stage]
            todo.extend(stages[stage]["after"])
    return found


SHELL_SYNTAX = {">", ">>", "2>&1", "|", "&&", ";", "<"}


def stage_settings(command: str) -> tuple[str, dict] | None:
    """(stage, settings) of a shell command: the part after its last ``-m camvidseg <stage>``
    (``-m camvidseg.<stage>`` in records of older code), parsed by the stage's own parser into
    what the stage records itself (``madeby.settings_of``); None for a command of no stage."""
    tokens = shlex.split(command)
    starts = [i + 1 for i, token in enumerate(tokens[:-1])
              if token == "-m" and tokens[i + 1].startswith("camvidseg")]  # fmt: skip
    if not starts:
        return None
    at = starts[-1]
    stage, rest = ((tokens[at + 1], tokens[at + 2 :]) if tokens[at] == "camvidseg"
                   else (tokens[at].split(".")[-1], tokens[at + 1 :]))  # fmt: skip
    argv = list(itertools.takewhile(lambda token: token not in SHELL_SYNTAX, rest))
    module = importlib.import_module(f"camvidseg.{codegraph.stages()[stage]}")
    try:
        return stage, madeby.settings_of(module.parse_args(argv))
    except (AttributeError, SystemExit):  # no parse_args, or flags of other code
        return stage, {"argv": argv}


def recorded(entry: dict) -> tuple[str | None, dict]:
    """(stage, settings) of a kept record's entry: as the stage wrote it, or, in a record of older
    code, parsed from the command it ran."""
    if "settings" in entry:
        return entry["stage"], entry["settings"]
    return stage_settings(entry["command"]) or (None, {})


def stage_settings_now(workdir, configfile, *args) -> dict[str, list[dict]]:
    """Stage -> the settings of each job of it that a fresh run would start, from a dry run
    printing its commands."""
    result = snakemake(workdir, "-n", "-p", *args, configfile=configfile)
    planned: dict[str, list] = {}
    for line in result.stdout.splitlines():
        command = line.removeprefix("Shell command: ")
        found = stage_settings(command) if command != line else None
        if found:
            planned.setdefault(found[0], []).append(found[1])
    return planned


def drift(workdir, configfile=DEMO_CONFIG) -> list[str]:
    """Why the kept demo run may not be what this checkout gives for ``configfile`` (empty: it
    is): the code of a stage its metrics come from, a package version, or a stage's settings."""
    cache, reasons = HashCache(), []
    now = madeby.environment()["packages"]
    settings_now = stage_settings_now(workdir, configfile)
    for name, entry in sorted(upstream_of_kept("demo").items()):
        if "stage" not in entry:
            reasons.append(f"{name}: recorded by older code")
            continue
        with sources_stable():  # not another test's momentary edit
            reasons += [f"{name}: {why}" for why in provenance.code_changes(entry, cache)]
        packages = entry["environment"]["packages"]
        reasons += [f"{name}: {pkg} {packages[pkg]} -> {now.get(pkg)}" for pkg in packages
                    if packages[pkg] != now.get(pkg)]  # fmt: skip
        stage, settings = recorded(entry)
        if settings not in settings_now.get(stage, []):
            reasons.append(f"{name}: {configfile.name} now gives other settings")
    return reasons


@pytest.mark.parametrize("name", TABLES)
def test_readme_table_is_rendered_from_the_kept_run(name):
    shown = readme_tables.current(name, (REPO / "README.md").read_text())
    assert shown == readme_tables.render(readme_tables.KEPT / name, name), (
        f"README's {name} table differs from docs/results/{name}/: {REGENERATE[name]}"
    )


@pytest.mark.parametrize("name", TABLES)
def test_kept_scores_are_what_the_recorded_run_wrote(name):
    made = [(path, identity) for entry in kept_record(name)["stages"].values()
            for path, identity in entry["outputs"].items()]  # fmt: skip
    kept = kept_files(name)
    expected = SWEEP_FILES if name in readme_tables.LEADERBOARDS else SPLIT_FILES
    assert set(kept) == expected
    for where, path in kept.items():
        written = [out for out, identity in made if identity == content_id(path)]
        assert any(out.endswith(f"/{where}") for out in written), (
            f"{path} is not a {where} the recorded run wrote: {REGENERATE[name]}"
        )


@pytest.mark.slow
def test_readme_demo_table_is_what_this_code_gives_for_the_demo_config(tmp_path):
    reasons = drift(tmp_path / "plan")
    if not reasons:
        return  # the kept run is this code's, with these packages and config/demo.yaml
    warnings.warn(
        "docs/results/demo/ is not of this checkout, so the demo ran again for this test "
        f"({'; '.join(reasons[:5])}); {REGENERATE['demo']} makes the test quick again",
        stacklevel=1,
    )
    snakemake(tmp_path, configfile=DEMO_CONFIG, timeout=3600)
    shown = table_rows(readme_tables.current("demo", (REPO / "README.md").read_text()))
    fresh = table_rows(readme_tables.render(tmp_path / "results"))
    # Bitwise equal only on the machine type that made the record; another CPU's kernels round
    # differently, within the spread the README documents (readme_tables.CPU_SPREAD).
    assert shown.keys() == fresh.keys(), f"splits differ: {REGENERATE['demo']}"
    for split, (scores, classes) in fresh.items():
        assert classes == shown[split][1], f"{split}: classes scored differ"
        for shown_score, score in zip(shown[split][0], scores, strict=True):
            assert abs(score - shown_score) <= readme_tables.CPU_SPREAD, (
                f"{split}: {score:.4f} here, {shown_score:.4f} in the README: beyond the "
                f"documented spread of {readme_tables.CPU_SPREAD}: {REGENERATE['demo']}"
            )


def table_rows(table: str) -> dict[str, tuple[list[float], int]]:
    """split -> (its scores, classes scored) of a rendered demo table."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = ([float(c) for c in cells[1:-1]], int(cells[-1]))
    return rows


def test_documented_spread_is_what_the_readme_table_test_allows():
    readme = (REPO / "README.md").read_text() + (REPO / "docs/reliability.md").read_text()
    assert f"±{readme_tables.CPU_SPREAD}" in readme
    rows = table_rows(readme_tables.current("demo", (REPO / "README.md").read_text()))
    assert rows["val"][1] == rows["test"][1] > 0


def test_drift_names_a_changed_stage_and_a_changed_config(tmp_path):
    with edited_source("training.model"):
        reasons = drift(tmp_path / "edited")
    assert "train: code changed: training/model.py" in reasons
    assert not any(reason.startswith("visualize") for reason in reasons)  # not a metrics stage
    assert not any(reason.endswith("other settings") for reason in reasons)
    config = tmp_path / "demo.yaml"
    config.write_text(DEMO_CONFIG.read_text().replace("epochs: 40", "epochs: 41"))
    changed = drift(tmp_path / "changed", config)
    assert [r for r in changed if r.endswith("other settings")] == [
        "train: demo.yaml now gives other settings"
    ]


def test_real_data_table_is_of_the_recipe_make_real_data_runs(tmp_path):
    """The real-data table may come from one of a sweep's experiments: its training settings and
    its scoring flags are then exactly those config/camvid_segnet.yaml gives `make real-data`."""
    kept = [recorded(entry) for entry in upstream_of_kept("real-data").values()]
    folder = segnet_layout(tmp_path / "CamVid")
    planned = stage_settings_now(tmp_path / "plan", SEGNET_CONFIG, *real_data_args(folder))
    trained = [json.loads(settings["settings"]) for stage, settings in kept if stage == "train"]
    now = [json.loads(settings["settings"]) for settings in planned["train"]]
    # Settings added since the run was recorded (e.g. train.trackers) are not compared.
    assert len(trained) == len(now) == 1
    assert trained[0] == {section: {key: now[0][section].get(key) for key in values}
                          for section, values in trained[0].items()}  # fmt: skip
    scored = sorted(scoring(settings) for stage, settings in kept if stage == "evaluate")
    assert scored == sorted(scoring(settings) for settings in planned["evaluate"])


def scoring(settings: dict) -> str:
    """An evaluate job's settings other than its paths and its loader's speed."""
    left_out = {"model", "prepared", "palette", "out_json", "out_csv", "batch_size", "num_workers"}
    return json.dumps({k: v for k, v in settings.items() if k not in left_out}, sort_keys=True)


def test_a_run_on_other_data_or_without_the_tables_files_changes_nothing(tmp_path):
    """The tool in a copy of the checkout: a demo run offered as real data, a run without a
    leaderboard offered as the sweep, are refused before README.md or docs/ change."""
    import shutil
    import subprocess

    repo = tmp_path / "checkout"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(REPO / "tools/readme_tables.py", repo / "tools")
    shutil.copy(REPO / "README.md", repo)
    shutil.copytree(REPO / "docs/results", repo / "docs/results")

    def files():
        return {p: p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}

    before = files()
    for name, run, reason in [
        ("real-data", "demo", "is a run on the built-in sample; the real-data table is of real"),
        ("real-data-sweep", "real-data", "has no leaderboard.md, leaderboard.csv"),
        ("demo", "real-data", "is a run on real data; the demo table is of the built-in sample"),
    ]:
        result = subprocess.run(
            [sys.executable, repo / "tools/readme_tables.py", name, REPO / "docs/results" / run],
            capture_output=True, text=True, cwd=repo,
        )  # fmt: skip
        assert result.returncode == 1 and reason in result.stderr, result.stderr
    assert files() == before
