"""The README's score tables are real runs' output.

tools/readme_tables.py keeps a run's metrics JSONs and provenance record in docs/results/<table>/
and renders the table from them. Here: each README table equals that rendering; the kept metrics
are byte for byte what the recorded run wrote (the record's output hashes); and the demo's record
is of this code, these package versions and config/demo.yaml's settings. Where it is not (someone
changed training, the data stages or the demo config without regenerating the table), the demo runs
again here and its table must equal the README's: slow only until the table is regenerated.
"""

import json
import sys
import warnings

import pytest
from conftest import REPO, edited_source, snakemake

from camvidseg import provenance
from camvidseg.identity import HashCache, content_id

sys.path.insert(0, str(REPO / "tools"))
import readme_tables

DEMO_CONFIG = REPO / "config/demo.yaml"
REGENERATE = {
    "demo": "make demo, then python tools/readme_tables.py demo results",
    "real-data": "make real-data CAMVID=../shared/data/camvid-segnet-subset, then "
    "python tools/readme_tables.py real-data results",
}


def kept_record(name: str) -> dict:
    return json.loads((readme_tables.KEPT / name / "provenance.json").read_text())


def upstream_of_metrics(record: dict) -> dict[str, dict]:
    """The record's stages that the split metrics come from: evaluate and all before it."""
    stages = record["stages"]
    todo = [name for name, entry in stages.items() if entry["rule"] == "evaluate"]
    found: dict[str, dict] = {}
    while todo:
        name = todo.pop()
        if name not in found:
            found[name] = stages[name]
            todo.extend(stages[name]["after"])
    return found


def stage_params_now(workdir, configfile) -> dict[str, list[dict]]:
    """Stage module -> the params of each job of it that a fresh run would start, from a dry run
    printing its commands."""
    result = snakemake(workdir, "-n", "-p", configfile=configfile)
    params: dict[str, list] = {}
    for line in result.stdout.splitlines():
        command = line.removeprefix("Shell command: ")
        modules = provenance.STAGE_IN_COMMAND.findall(command)
        if command != line and modules:
            params.setdefault(modules[-1], []).append(provenance.command_params(command))
    return params


def drift(record: dict, workdir, configfile=DEMO_CONFIG) -> list[str]:
    """Why the kept demo run may not be what this checkout gives for ``configfile`` (empty: it
    is): the code of a stage its metrics come from, a package version, or a stage's params."""
    cache, reasons = HashCache(), []
    now = provenance.environment()["packages"]
    params_now = stage_params_now(workdir, configfile)
    for name, entry in sorted(upstream_of_metrics(record).items()):
        reasons += [f"{name}: {why}" for why in provenance.code_changes(entry, cache)]
        packages = entry["environment"]["packages"]
        reasons += [f"{name}: {pkg} {packages[pkg]} -> {now.get(pkg)}" for pkg in packages
                    if packages[pkg] != now.get(pkg)]  # fmt: skip
        if entry["params"] not in params_now.get(entry["module"], []):
            reasons.append(f"{name}: {configfile.name} now gives other params")
    return reasons


@pytest.mark.parametrize("name", ["demo"])
def test_readme_table_is_rendered_from_the_kept_run(name):
    shown = readme_tables.current(name, (REPO / "README.md").read_text())
    assert shown == readme_tables.render(readme_tables.KEPT / name), (
        f"README's {name} table differs from docs/results/{name}/: {REGENERATE[name]}"
    )


@pytest.mark.parametrize("name", ["demo"])
def test_kept_metrics_are_what_the_recorded_run_wrote(name):
    made = {path: identity for entry in kept_record(name)["stages"].values()
            for path, identity in entry["outputs"].items()}  # fmt: skip
    kept = sorted((readme_tables.KEPT / name / "metrics").glob("*.json"))
    assert {p.stem for p in kept} == {"val", "test"}
    for path in kept:
        assert content_id(path) == made[f"results/metrics/{path.name}"], (
            f"{path} is not the file the recorded run wrote: {REGENERATE[name]}"
        )


@pytest.mark.slow
def test_readme_demo_table_is_what_this_code_gives_for_the_demo_config(tmp_path):
    reasons = drift(kept_record("demo"), tmp_path / "plan")
    if not reasons:
        return  # the kept run is this code's, with these packages and config/demo.yaml
    warnings.warn(
        "docs/results/demo/ is not of this checkout, so the demo ran again for this test "
        f"({'; '.join(reasons[:5])}); {REGENERATE['demo']} makes the test quick again",
        stacklevel=1,
    )
    snakemake(tmp_path, configfile=DEMO_CONFIG, timeout=3600)
    demo_table = readme_tables.current("demo", (REPO / "README.md").read_text())
    assert demo_table == readme_tables.render(tmp_path / "results"), (
        f"README's demo table differs from what `make demo` produces: {REGENERATE['demo']}"
    )


def test_drift_names_a_changed_stage_and_a_changed_config(tmp_path):
    record = kept_record("demo")
    with edited_source("model"):
        reasons = drift(record, tmp_path / "edited")
    assert "train: code changed: model.py" in reasons
    assert not any(reason.startswith("visualize") for reason in reasons)  # not a metrics stage
    assert not any(reason.endswith("other params") for reason in reasons)
    config = tmp_path / "demo.yaml"
    config.write_text(DEMO_CONFIG.read_text().replace("epochs: 40", "epochs: 41"))
    changed = drift(record, tmp_path / "changed", config)
    assert [r for r in changed if r.endswith("other params")] == [
        "train: demo.yaml now gives other params"
    ]
