"""Experiments and sweeps: one shared data chain, a job per experiment, a leaderboard over them."""

import csv
import json
import re

import pytest
import yaml
from conftest import (
    TINY,
    edited_source,
    jobs_planned,
    provenance_check,
    run_cli,
    snakemake,
    stale_jobs,
)

from camvidseg.data.identity import content_id
from camvidseg.workflow.experiments import MAX_NAME, differing, expand_sweep

DATA_RULES = ("obtain_dataset", "extract", "palette", "convert_masks")
SWEEP = {"train.lr": [0.001, 0.003], "train.seed": [0, 1]}
NAMES = ["lr=0.001,seed=0", "lr=0.001,seed=1", "lr=0.003,seed=0", "lr=0.003,seed=1"]


def write_config(path, **sections):
    """tests/tiny.yaml with ``sections`` (e.g. sweep=..., experiments=...) on top."""
    config = yaml.safe_load(TINY.read_text())
    config["vis"]["splits"] = ["val"]  # one panel per experiment is enough here
    config.update(sections)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def settings_by_experiment(dry_run_output: str) -> dict[str, dict]:
    """The --settings JSON of each training job in a dry run printed with -p."""
    found = {}
    for job in dry_run_output.split("Job ")[1:]:
        name = re.search(r"\[experiment (.+?)\]", job)
        command = re.search(r"--settings '(\{.*?\})'", job)
        if name and command:
            found[name.group(1)] = json.loads(command.group(1))
    return found


def test_sweep_names_are_readable_stable_and_typed():
    grid = expand_sweep({"model.name": ["lraspp_mobilenet_v3_large"], **SWEEP})
    assert list(grid) == [f"model=lraspp_mobilenet_v3_large,{n}" for n in NAMES]
    assert grid["model=lraspp_mobilenet_v3_large,lr=0.003,seed=1"] == {
        "model": {"name": "lraspp_mobilenet_v3_large"},
        "train": {"lr": 0.003, "seed": 1},
    }
    # Adding a value keeps every existing name (and so its cached results).
    wider = expand_sweep({"train.lr": [0.001, 0.003, 0.01], "train.seed": [0, 1]})
    assert set(NAMES) < set(wider) and len(wider) == 6
    lists = expand_sweep({"train.crop_size": [[96, 128]], "train.amp": [False]})
    assert list(lists) == ["crop_size=96x128,amp=false"]


def test_differing_lists_only_settings_that_vary():
    a = {"model": {"name": "x"}, "train": {"lr": 0.1, "seed": 0}}
    b = {"model": {"name": "x"}, "train": {"lr": 0.2, "seed": 0}}
    assert differing({"a": a, "b": b}) == ["train.lr"]


def test_leaderboard_ranks_best_first_ties_by_name_unscored_last():
    from camvidseg.reporting.leaderboard import rank

    scores = {"c": 0.25, "a": None, "d": 0.75, "b": 0.25, "e": 0.5}
    rows = [
        {"experiment": name, "val_mIoU": v, "test_mIoU": 1 - (v or 0)} for name, v in scores.items()
    ]
    assert [r["experiment"] for r in rank(rows, ["val", "test"])] == ["d", "e", "b", "c", "a"]
    # Without a val split, the first split ranks.
    assert [r["experiment"] for r in rank(rows, ["test"])] == ["a", "b", "c", "e", "d"]


def test_compare_refuses_runs_scored_on_different_class_lists(tmp_path):
    def run_folder(name, classes):
        per_class = [{"class": c, "IoU": iou} for c, iou in classes.items()]
        (tmp_path / name / "metrics").mkdir(parents=True)
        metrics = {"split": "val", "mIoU": 0.5, "per_class": per_class}
        (tmp_path / name / "metrics/val.json").write_text(json.dumps(metrics))
        return tmp_path / name

    a = run_folder("a", {"Sky": 0.25, "Road": 0.75})
    b = run_folder("b", {"Sky": 0.5, "Road": 0.5})
    lines = run_cli("compare", a, b).stdout.splitlines()
    assert [line.split() for line in lines[2:]] == [
        ["Sky", "0.2500", "0.5000", "+0.2500"],
        ["Road", "0.7500", "0.5000", "-0.2500"],
        ["mIoU", "0.5000", "0.5000", "+0.0000"],
    ]
    other = run_folder("other", {"Sky": 0.5, "Car": 0.5})
    refused = run_cli("compare", a, other, check=False)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: the two runs were scored on different class lists; nothing to compare"
    ]


def test_sweep_dry_run_shares_the_data_chain_and_trains_each_experiment(tmp_path):
    config = write_config(tmp_path / "sweep.yaml", sweep=SWEEP)
    result = snakemake(tmp_path, "-n", "-p", configfile=config)
    planned = jobs_planned(result)
    assert {rule: planned[rule] for rule in DATA_RULES} == dict.fromkeys(DATA_RULES, 1)
    assert planned["train"] == 4 and planned["evaluate"] == 8 and planned["leaderboard"] == 1
    # Each training job gets its experiment's complete settings once, as one JSON object.
    settings = settings_by_experiment(result.stdout)
    assert sorted(settings) == NAMES
    tiny = yaml.safe_load(TINY.read_text())
    for name, given in settings.items():
        lr, seed = re.fullmatch(r"lr=(.+),seed=(.+)", name).groups()
        assert given["train"] | {"lr": float(lr), "seed": int(seed)} == given["train"]
        assert given["train"]["epochs"] == tiny["train"]["epochs"]
        assert given["train"]["weight_decay"] == 0.0001  # the schema's default, filled in once
        assert given["model"]["name"] == tiny["model"]["name"]


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"experiments": {"fast": {"train": {"lr": "quick"}}}},
         "invalid config: experiments.fast.train.lr: 'quick' is not of type 'number'"),
        ({"experiments": {"fast": {"train": {"lrate": 0.1}}}},
         "invalid config: experiments.fast.train: Additional properties are not allowed"),
        ({"experiments": {"fast": {"dataset": {"path": "x"}}}},
         "invalid config: experiments.fast: Additional properties are not allowed ('dataset'"),
        ({"experiments": {"a b": {}}}, "invalid config: experiments: 'a b' does not match"),
        ({"experiments": {"fast": {"eval": {"splits": ["val"]}}}},
         "invalid config: experiments.fast.eval.splits: must be the same for every experiment"),
        ({"sweep": {"train.lr": [0.1, "quick"]}},
         "invalid config: sweep.train.lr: 'quick' is not of type 'number'"),
        ({"sweep": {"train.lr": []}}, "invalid config: sweep.train.lr: [] should be non-empty"),
        ({"sweep": {"lr": [0.1]}}, "invalid config: sweep: 'lr' does not match"),
        ({"sweep": {"train.seed": [0]}, "experiments": {"seed=0": {}}},
         "invalid config: experiments.seed=0: also made by sweep"),
        ({"train": {"lr": float("nan")}}, "invalid config: train.lr: .nan is not a finite number"),
        ({"train": {"lr": float("inf")}}, "invalid config: train.lr: .inf is not a finite number"),
        ({"experiments": {"fast": {"train": {"lr": float("nan")}}}},
         "invalid config: experiments.fast.train.lr: .nan is not a finite number"),
        ({"sweep": {"train.lr": [0.1, float("-inf")]}},
         "invalid config: sweep.train.lr: -.inf is not a finite number"),
        ({"dataset": {"max_unpack_gib": float("inf")}},
         "invalid config: dataset.max_unpack_gib: .inf is not a finite number"),
        ({"experiments": {1: {}}}, "invalid config: experiments: name 1 is not text"),
        ({"experiments": {True: {}}}, "invalid config: experiments: name True is not text"),
    ],
)  # fmt: skip
def test_experiment_config_errors_are_one_line_naming_the_key(tmp_path, sections, message):
    config = write_config(tmp_path / "bad.yaml", **sections)
    result = snakemake(tmp_path, "-n", configfile=config, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and message in output, output
    assert "Traceback" not in output


def test_generated_names_are_bounded_unique_and_stable():
    """Long swept values (here lists of 60 numbers) would make names past a file name's 255
    bytes ("File name too long" at run time); they are shortened with a hash of the whole."""
    grid = {"train.crop_size": [[96] * 60, [96] * 59 + [97]], "eval.tta.scales": [[0.5] * 40]}
    names = list(expand_sweep(grid))
    assert len(set(names)) == 2 and all(len(name) <= MAX_NAME for name in names), names
    assert names == list(expand_sweep(grid))  # a name depends only on its values
    assert names[0].startswith("crop_size=96x96x")
    assert list(expand_sweep({"train.lr": [0.001]})) == ["lr=0.001"]  # short names are kept


def test_a_sweep_planning_many_jobs_warns_with_the_key_that_raises_the_limit(tmp_path):
    sweep = {"train.lr": [0.001, 0.002, 0.003], "train.seed": [0, 1, 2]}
    config = write_config(tmp_path / "sweep.yaml", sweep=sweep, warn_above_jobs=20)
    result = snakemake(tmp_path, "-n", configfile=config)
    total = sum(jobs_planned(result).values())
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "9 experiments" in warning[0], result.stderr
    assert "more than warn_above_jobs (20)" in warning[0]
    planned = int(re.search(r"about (\d+) jobs", warning[0]).group(1))
    assert total - 5 <= planned <= total, (planned, total)
    config = write_config(tmp_path / "sweep.yaml", sweep=sweep, warn_above_jobs=total + 10)
    result = snakemake(tmp_path, "-n", configfile=config)
    assert "warning: " not in result.stderr


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """The 2x2 sweep run once (tiny sample, 2 epochs each) for the tests that read it."""
    workdir = tmp_path_factory.mktemp("sweep_run")
    config = write_config(workdir / "sweep.yaml", sweep=SWEEP)
    snakemake(workdir, configfile=config)
    return workdir


def read_leaderboard(workdir):
    with (workdir / "results/leaderboard.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_sweep_run_gives_one_folder_per_experiment_and_a_leaderboard(sweep_run):
    root = sweep_run / "results/experiments"
    assert sorted(p.name for p in root.iterdir()) == NAMES
    for name in NAMES:
        folder = root / name
        for part in (
            "model/best.pth",
            "metrics/val.json",
            "metrics/test.json",
            "plots/training_curves.png",
            "logs/train.log",
            "benchmarks/train.tsv",
        ):
            assert (folder / part).is_file(), folder / part  # fmt: skip
        assert len(list((folder / "vis_data").glob("val_*_panel.png"))) == 1
        assert len(list((folder / "train_work").iterdir())) == 1  # its own work dir
    assert not (sweep_run / "results/model").exists()  # the base config was not trained

    rows = read_leaderboard(sweep_run)
    assert sorted(r["experiment"] for r in rows) == NAMES
    assert list(rows[0])[:3] == ["experiment", "train.lr", "train.seed"]
    val_scores = [float(r["val_mIoU"]) for r in rows]
    assert val_scores == sorted(val_scores, reverse=True)
    for row in rows:
        folder = root / row["experiment"]
        val = json.loads((folder / "metrics/val.json").read_text())
        test = json.loads((folder / "metrics/test.json").read_text())
        assert float(row["val_mIoU"]) == val["mIoU"] and float(row["test_mIoU"]) == test["mIoU"]
        assert float(row["val_mAcc"]) == val["mAcc"] and float(row["val_aAcc"]) == val["aAcc"]
        assert int(row["best_epoch"]) == val["epoch"]
        assert float(row["train.lr"]) == float(row["experiment"].split(",")[0][3:])
        assert float(row["train_seconds"]) > 0 and float(row["train_img_per_s"]) > 0
        assert int(row["parameters"]) > 100_000
        assert row["model_id"] == content_id(folder / "model/best.pth")  # as provenance records
    markdown = (sweep_run / "results/leaderboard.md").read_text().splitlines()
    assert markdown[0].startswith("| experiment | train.lr | train.seed | val_mIoU |")
    assert len(markdown) == 2 + 4
    for figure in ("leaderboard_curves.png", "leaderboard_iou.png"):
        assert (sweep_run / "results" / figure).stat().st_size > 10_000


def test_provenance_record_covers_every_experiment(sweep_run):
    """Each experiment's jobs are in the record with their own settings, made from the one data
    chain; an edit of visualize.py makes exactly the visualize job of every experiment stale."""
    record = json.loads((sweep_run / "results/provenance.json").read_text())
    trains = {n: s for n, s in record["stages"].items() if s["stage"] == "train"}
    assert sorted(trains) == [f"train:results/experiments/{n}/model/best.pth" for n in NAMES]
    for name, stage in trains.items():
        lr, seed = re.search(r"lr=(.+),seed=(\d+)/", name).groups()
        train = stage["settings"]["train"]
        assert (train["lr"], train["seed"]) == (float(lr), int(seed))
        assert stage["dataset"] == record["dataset"]
    assert provenance_check(sweep_run).returncode == 0
    with edited_source("evaluation.visualize"):
        result = provenance_check(sweep_run)
    assert stale_jobs(result) == {f"visualize:results/experiments/{n}/vis_data" for n in NAMES}


def test_compare_prints_per_class_iou_differences(sweep_run):
    a, b = NAMES[0], NAMES[3]
    result = run_cli("compare", a, b, "--results", sweep_run / "results")
    lines = result.stdout.splitlines()
    assert lines[0] == f"per-class IoU on val: A = {a}, B = {b}"
    metrics = [json.loads((sweep_run / f"results/experiments/{n}/metrics/val.json").read_text())
               for n in (a, b)]  # fmt: skip
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["mIoU"] == [f"{metrics[0]['mIoU']:.4f}", f"{metrics[1]['mIoU']:.4f}",
                            f"{metrics[1]['mIoU'] - metrics[0]['mIoU']:+.4f}"]  # fmt: skip
    scored = [c["class"] for c in metrics[0]["per_class"] if c["IoU"] is not None]
    assert set(scored) <= set(rows)
    missing = run_cli("compare", a, "nope", "--results", sweep_run / "results", check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    assert "nope" in missing.stderr and len(missing.stderr.splitlines()) == 1


# What one experiment's change re-runs: its own jobs, then the leaderboard and the record.
ONE_EXPERIMENT = {"train": 1, "evaluate": 2, "visualize": 1, "plots": 1, "leaderboard": 1,
                  "headline": 1, "provenance": 1, "all": 1}  # fmt: skip


def explicit(overrides_of=None, extra=None) -> dict:
    """The sweep written out as named experiments, with changes."""
    experiments = {}
    for name, overrides in expand_sweep(SWEEP).items():
        experiments[name] = (overrides_of or {}).get(name, overrides)
    return experiments | (extra or {})


def test_changing_adding_and_removing_experiments_reruns_only_what_they_touch(sweep_run):
    same = write_config(sweep_run / "same.yaml", experiments=explicit())
    assert "Nothing to be done" in snakemake(sweep_run, "-n", configfile=same).stdout

    changed = {NAMES[0]: {"train": {"lr": 0.002, "seed": 0}}}
    config = write_config(sweep_run / "changed.yaml", experiments=explicit(changed))
    result = snakemake(sweep_run, "-n", configfile=config)
    assert jobs_planned(result) == ONE_EXPERIMENT
    assert f"[experiment {NAMES[0]}]" in result.stdout

    fifth = {"fifth": {"train": {"seed": 7}}}
    config = write_config(sweep_run / "fifth.yaml", experiments=explicit(extra=fifth))
    result = snakemake(sweep_run, "-n", configfile=config)
    assert jobs_planned(result) == ONE_EXPERIMENT
    assert "[experiment fifth]" in result.stdout

    fewer = {n: o for n, o in explicit().items() if n != NAMES[1]}
    config = write_config(sweep_run / "fewer.yaml", experiments=fewer)
    result = snakemake(sweep_run, "-n", configfile=config)
    assert jobs_planned(result) == {"leaderboard": 1, "headline": 1, "provenance": 1, "all": 1}
    snakemake(sweep_run, configfile=config)
    assert sorted(r["experiment"] for r in read_leaderboard(sweep_run)) == sorted(fewer)


def test_one_experiment_and_the_base_config_are_targets_of_their_own(sweep_run):
    config = write_config(sweep_run / "sweep.yaml", sweep=SWEEP)
    result = snakemake(sweep_run, "-n", f"results/experiments/{NAMES[2]}/vis_data",
                       "results/vis_data", configfile=config)  # fmt: skip
    planned = jobs_planned(result)
    assert planned == {"train": 1, "visualize": 1}  # the base config's run; NAMES[2] is done
    assert "results/model/best.pth" in result.stdout
    unknown = snakemake(sweep_run, "-n", "results/experiments/nope/vis_data", configfile=config,
                        check=False)  # fmt: skip
    output = unknown.stdout + unknown.stderr
    assert unknown.returncode != 0 and "unknown experiment 'nope'" in output


def test_an_experiment_exports_and_gets_a_model_card_of_its_own_settings(sweep_run):
    config = write_config(sweep_run / "sweep.yaml", sweep=SWEEP)
    card = f"results/experiments/{NAMES[2]}/model/MODEL_CARD.md"
    result = snakemake(sweep_run, "-n", "-p", card, configfile=config)
    assert jobs_planned(result) == {"export_onnx": 1, "check_export": 1, "model_card": 1}
    assert f"results/experiments/{NAMES[2]}/metrics/cost.json" in result.stdout
    stated = json.loads(re.search(r"camvidseg.card .*--settings '(\{.*?\})'", result.stdout)[1])
    assert (stated["train"]["lr"], stated["train"]["seed"]) == (0.003, 0)
    assert stated["dataset"]["source"] == "sample"


def test_report_has_a_leaderboard_category_labelled_by_experiment(sweep_run):
    config = write_config(sweep_run / "sweep.yaml", sweep=SWEEP)
    report = sweep_run / "report.html"
    snakemake(sweep_run, "--report", report, configfile=config)
    html = report.read_text()
    assert '"Leaderboard"' in html
    for name in NAMES:  # report tables show experiment names as labels, not only in paths
        assert f"{name} \\u00b7 val \\u00b7 per-class scores (CSV)" in html
