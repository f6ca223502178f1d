"""What the workflow decides from its config before any job (camvidseg.workflow.plan), tested
without Snakemake's parse: validation, the dataset's parts and identity, GPU requests, targets,
and the one place the workflow changes its process's environment."""

import copy
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from camvidseg.core.errors import UserError
from camvidseg.data import identity
from camvidseg.data.obtain import archive_parts
from camvidseg.workflow import plan

BASE = yaml.safe_load((REPO / "config/config.yaml").read_text())


def config(**sections) -> dict:
    """The shipped config with ``sections`` merged over it (one level deep)."""
    merged = copy.deepcopy(BASE)
    for name, values in sections.items():
        merged[name] = (merged.get(name) or {}) | values if isinstance(values, dict) else values
    return merged


def local(path, **extra) -> dict:
    validated = config(dataset={"source": "local", "path": str(path), **extra})
    plan.validate(validated)
    return validated["dataset"]


# ---------------------------------------------------------------- validation


def test_validate_types_fills_defaults_and_collects_experiments():
    given = config(train={"lr": "1e-3"}, sweep={"train.seed": ["0", "1"]})
    given["train"].pop("weight_decay", None)
    named = plan.validate(given)
    assert given["train"]["lr"] == 0.001  # typed by the schema
    assert given["train"]["weight_decay"] == 0.0001  # the schema's default, filled in
    assert sorted(named) == ["seed=0", "seed=1"]
    assert named["seed=1"] == {"train": {"seed": 1}}  # overrides stay overrides
    settings = plan.run_settings(given, named)
    assert settings["seed=1"]["train"]["seed"] == 1 and settings[""]["train"]["seed"] == 0


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"train": {"lr": "fast"}}, "invalid config: train.lr: 'fast' is not of type 'number'"),
        ({"trian": {"lr": 1}},
         "invalid config: (top level): Additional properties are not allowed ('trian'"),
        ({"sweep": {"train.lr": [0.1, "quick"]}},
         "invalid config: sweep.train.lr: 'quick' is not of type 'number'"),
        ({"experiments": {"fast": {"eval": {"splits": ["val"]}}}},
         "invalid config: experiments.fast.eval.splits: must be the same for every experiment"),
        # NaN and infinity pass every range check of the schema, then break the trainer
        ({"train": {"lr": float("nan")}}, "invalid config: train.lr: .nan is not a finite number"),
        ({"train": {"lr": "-.inf"}}, "invalid config: train.lr: -.inf is not a finite number"),
        ({"eval": {"tta": {"scales": [1.0, float("inf")]}}},
         "invalid config: eval.tta.scales: .inf is not a finite number"),
        ({"sweep": {"train.lr": [0.1, ".nan"]}},
         "invalid config: sweep.train.lr: .nan is not a finite number"),
        ({"experiments": {"x": {"train": {"momentum": float("nan")}}}},
         "invalid config: experiments.x.train.momentum: .nan is not a finite number"),
        ({"experiments": {7: {}}}, "invalid config: experiments: name 7 is not text; quote it"),
    ],
)  # fmt: skip
def test_config_problems_are_one_user_error_naming_the_key(sections, message):
    with pytest.raises(UserError) as raised:
        plan.validate(config(**sections))
    assert str(raised.value).startswith(message), raised.value
    assert "\n" not in str(raised.value)


# ---------------------------------------------------------------- the dataset


def test_split_archive_parts_come_in_numeric_order_wherever_they_are_found(tmp_path):
    folder = tmp_path / "odd [name]*"  # glob characters in the path are taken literally
    folder.mkdir()
    for n in (0, 1, 2, 10, 9):
        (folder / f"CamVid.tar.gz.{n:02d}").write_bytes(bytes([n]))
    (folder / "CamVid.tar.gz.md5").write_text("not a part")
    expected = [f"CamVid.tar.gz.{n}" for n in ("00", "01", "02", "09", "10")]
    parts = plan.local_archive(local(folder / "CamVid.tar.gz.01"))
    assert [os.path.basename(p) for p in parts] == expected
    assert [p.name for p in archive_parts(folder)] == expected  # the download joins the same way
    assert plan.local_archive(local(folder / "CamVid.tar.gz.md5")) == [
        str(folder / "CamVid.tar.gz.md5")
    ]


def test_missing_or_empty_dataset_path_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^dataset\.path: .*nope does not exist \(dataset"):
        plan.local_dataset_path(local(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"dataset\.path: required when dataset\.source is local"):
        plan.local_dataset_path(local(""))
    with pytest.raises(UserError, match=r"git clone https://github\.com/alexgkendall"):
        plan.is_local_folder(local(tmp_path / "nope", layout="segnet11"))


def test_dataset_paths_snakemake_or_the_disk_cannot_follow_are_one_line(tmp_path):
    """Braces (Snakemake wildcards), a dangling symlink and a symlink loop, as dataset.path or
    inside the dataset folder: one UserError naming the path, never a traceback."""
    braces = tmp_path / "data{x}"
    braces.mkdir()
    with pytest.raises(UserError, match=r"^dataset\.path: .*data\{x\} holds '\{' or '\}'"):
        plan.is_local_folder(local(braces))
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(UserError, match=r"dangling is a symlink that leads nowhere: No such"):
        plan.is_local_folder(local(tmp_path / "dangling"))
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(UserError, match=r"loop is a symlink that leads nowhere: Too many levels"):
        plan.dataset_source_key(local(tmp_path / "loop"))
    for inside in ("dangling", "loop"):
        folder = tmp_path / f"with_{inside}"
        (folder / "train").mkdir(parents=True)
        link = folder / "train" / "a.png"
        link.symlink_to(tmp_path / "gone" if inside == "dangling" else link)
        with pytest.raises(UserError, match=rf"^dataset\.path: {re.escape(str(link))}: "):
            plan.dataset_source_key(local(folder))


def test_a_grid_planning_more_jobs_than_warn_above_jobs_is_a_warning():
    given = config(sweep={"train.lr": [0.001, 0.002, 0.003], "train.seed": [0, 1, 2]})
    named = plan.validate(given)
    assert plan.planned_jobs_warning(given, named) is None  # 53 jobs, under the default
    given["warn_above_jobs"] = 20
    warning = plan.planned_jobs_warning(given, named)
    assert warning.startswith("warning: the config plans 9 experiments, about 53 jobs")
    assert "warn_above_jobs (20)" in warning


def validated_dataset(dataset: dict) -> dict:
    given = config(dataset=dataset)
    plan.validate(given)
    return given["dataset"]


def test_dataset_source_key_changes_with_the_files_whatever_their_times(tmp_path):
    archive = tmp_path / "CamVid.tar.gz"
    archive.write_bytes(b"one")
    first = plan.dataset_source_key(local(archive))
    stat = archive.stat()
    archive.write_bytes(b"two")  # same size, and the old mtime back (cp -p, rsync -t)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert plan.dataset_source_key(local(archive)) != first
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    dataset = local(folder)
    assert plan.is_local_folder(dataset)
    before = plan.dataset_source_key(dataset)
    stat = (folder / "a.png").stat()
    (folder / "a.png").write_bytes(b"z")
    os.utime(folder / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert plan.dataset_source_key(dataset) != before
    assert plan.dataset_source_key(dataset) == plan.dataset_source_key(dataset)
    sample = validated_dataset({"source": "sample"})
    keys = [plan.dataset_source_key(d) for d in (sample, dataset, local(archive))]
    assert len({json.dumps(k, sort_keys=True) for k in keys}) == 3


def test_dataset_source_file_is_rewritten_only_when_the_key_changes(tmp_path):
    path = tmp_path / "results/data/source.json"
    sample = validated_dataset({"source": "sample"})
    plan.write_dataset_source(sample, str(path))
    os.utime(path, ns=(1, 1))
    plan.write_dataset_source(sample, str(path))
    assert path.stat().st_mtime_ns == 1  # same key: untouched, nothing re-runs
    url = validated_dataset({"source": "url", "url": "https://h/a.tgz?sig=SECRET"})
    plan.write_dataset_source(url, str(path))
    assert path.stat().st_mtime_ns > 1 and "SECRET" not in path.read_text()


def test_a_signed_url_is_written_redacted_and_reaches_jobs_only_by_environment():
    given = config(dataset={"source": "url", "url": "https://host/CamVid.zip?sig=SECRET"})
    plan.validate(given)
    dataset = given["dataset"]
    assert plan.archive_name(dataset) == "resources/CamVid.zip"
    params = plan.obtain_params(dataset)
    assert "SECRET" not in json.dumps(params) and params["url"].startswith("https://host/")
    run = plan.run_settings(given, {})[""]
    assert "SECRET" not in plan.card_settings(run, dataset)
    env = plan.job_environment("/src", "/shim", dataset, environ={})
    assert env[plan.DATASET_URL_ENV] == dataset["url"]
    with pytest.raises(UserError, match=r"dataset\.url: required"):
        plan.obtain_params(dataset | {"url": ""})


# ---------------------------------------------------------------- GPUs, targets


def test_gpu_requests_and_processes_come_from_settings_and_the_grant():
    run = {"train": {"device": "cuda", "gpus": 2}}
    assert plan.gpus_requested(run, nodes=3) == 6
    assert plan.gpus_requested({"train": {"device": "auto", "gpus": 2}}, nodes=1) == 0
    assert plan.inference_gpus(run) == 1
    assert plan.processes_per_node(gpus_granted=6, node_tasks=3, configured_gpus=2) == 2
    assert plan.processes_per_node(gpus_granted=0, node_tasks=1, configured_gpus=2) == 2
    assert plan.node_resources(1) == {}
    assert plan.node_resources(2)["tasks"] == 2


def test_final_outputs_of_one_run_and_of_experiments():
    given = config(eval={"splits": ["val", "test"]})
    plan.validate(given)
    single = plan.final_outputs(given, {})
    assert single[:2] == ["results/metrics/val.json", "results/metrics/test.json"]
    assert "results/model/MODEL_CARD.md" in single and single[-1] == "results/headline.html"
    named = plan.final_outputs(given, {"a": {}, "b": {}})
    assert "results/experiments/b/metrics/test.json" in named
    assert named[-2:] == ["results/leaderboard.csv", "results/headline.html"]
    assert "results/model/MODEL_CARD.md" not in named


# ---------------------------------------------------------------- the process's environment


def test_interpreter_shim_runs_the_interpreter_that_wrote_it(tmp_path):
    folder = plan.write_interpreter_shim(str(tmp_path / "bin"))
    env = plan.job_environment("/src", folder, {"source": "sample"}, environ={"PATH": "/usr/bin"})
    assert env["PATH"] == f"{folder}{os.pathsep}/usr/bin"
    assert env["PYTHONPATH"] == "/src" and env[identity.CACHE_ENV] == identity.CACHE_FILE
    shim = os.path.join(folder, "python")
    result = subprocess.run([shim, "-c", "import sys; print(sys.executable)"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert result.stdout.strip() == sys.executable


def test_rules_change_no_environment_outside_the_one_place():
    """os.environ and signal dispositions change only in plan.prepare_process, which common.smk
    calls once; the rules files stay lookups and input functions."""
    rules = [REPO / "workflow/Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]
    for path in rules:
        text = path.read_text()
        assert not re.search(r"os\.environ|signal\.signal|os\.putenv", text), path
    common = (REPO / "workflow/rules/common.smk").read_text()
    assert common.count("plan.prepare_process(") == 1
    assert len(common.splitlines()) <= 150


def test_one_file_hash_for_archives_parts_and_the_cache(tmp_path):
    """core.fileio.sha256_file is the hash of downloads, archive parts and the identity cache."""
    import hashlib

    from camvidseg.core.fileio import sha256_file

    first, second = tmp_path / "a.00", tmp_path / "a.01"
    first.write_bytes(b"x" * (3 << 20))  # several read blocks
    second.write_bytes(b"tail")
    joined = hashlib.sha256(b"x" * (3 << 20) + b"tail").hexdigest()
    assert sha256_file(first, second) == joined
    assert identity.content_id([first, second]) == f"sha256:{joined}"
    assert sha256_file(second) == hashlib.sha256(b"tail").hexdigest()
