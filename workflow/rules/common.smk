import sys

from snakemake.exceptions import WorkflowError

# Parse-time helpers from the package itself (standard library, YAML and jsonschema only).
sys.path.insert(0, SRC)
from camvidseg.data import identity  # noqa: E402
from camvidseg.core.errors import UserError  # noqa: E402
from camvidseg.workflow import codegraph, plan  # noqa: E402


def stop(problem):
    """The one way a config problem ends the run before any job: one line naming the key."""
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)


try:
    # the config typed and checked; experiments: name -> overrides (none: one run in results/)
    EXPERIMENTS = plan.validate(config, warn=workflow.is_main_process)
    DATASET = config["dataset"]
    LOCAL_FOLDER = plan.is_local_folder(DATASET)
    LOCAL_ARCHIVE = plan.local_archive(DATASET) if DATASET["source"] == "local" else []
    OBTAIN_PARAMS = {} if DATASET["source"] == "local" else plan.obtain_params(DATASET)
    # what the config says the data is, an input of obtain/extract (plan.write_dataset_source)
    DATASET_SOURCE = plan.write_dataset_source(DATASET)
except UserError as problem:
    stop(problem)

# The one place this workflow changes its own process (jobs inherit it): PYTHONPATH, a `python`
# shim first on PATH, the hash cache, the dataset URL, SIGUSR1 ignored (plan.prepare_process).
plan.prepare_process(SRC, DATASET)
DATA_ENV = "../../envs/camvidseg.yaml"
DOWNLOAD_ENV = "../../envs/download.yaml"
SPLITS = ["train", "val", "test"]
EVAL_SPLITS = config["eval"]["splits"]  # one list for every experiment
NODES = config["train"]["nodes"]  # the same for every experiment
NODE_RESOURCES = plan.node_resources(NODES)
RUN_SETTINGS = plan.run_settings(config, EXPERIMENTS)
EXPECT_FULL = plan.expect_flags(DATASET)
FINAL_OUTPUTS = plan.final_outputs(config, EXPERIMENTS)
EXPERIMENT_DIRS = [f"experiments/{name}/" for name in EXPERIMENTS]


def code(module):
    """Source files that ``python -m camvidseg <stage>`` executes (the module's import closure
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


def per_run(decide, *args):
    """An input function: ``decide`` of the job's experiment's settings (and ``args``)."""
    return lambda wildcards: decide(run_settings(wildcards), *args)


training_settings = per_run(plan.training_settings)
card_settings = per_run(plan.card_settings, DATASET)
gpu_request = per_run(plan.gpus_requested, NODES)
inference_gpu_request = per_run(plan.inference_gpus)
backbone_weights_file = per_run(plan.backbone_weights)
initial_weights_file = per_run(plan.initial_weights)
eval_mode_flags = per_run(plan.eval_mode_flags)


def run_label(wildcards):
    name = experiment(wildcards)
    return f" [experiment {name}]" if name else ""


def node_tasks(wildcards, resources):
    """torchrun agents: the SLURM tasks of a multi-node job (one per node), else 1."""
    return getattr(resources, "tasks", 1) if NODES > 1 else 1


def gpu_processes(wildcards, resources):
    configured = run_settings(wildcards)["train"]["gpus"]
    granted = getattr(resources, "gpu", 0)
    return plan.processes_per_node(
        granted, node_tasks(wildcards, resources), configured
    )


def gpus_to_lease(wildcards, resources):
    """GPUs the job asks for: run locally, `camvidseg lease` picks free device ids for it."""
    return getattr(resources, "gpu", 0)


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


def per_split_reports(pattern, caption, item):
    """One report entry per scored split, labelled "val · confusion matrix" in the Metrics table;
    named outputs for ``**``. ``pattern`` holds ``{split}`` and may hold ``{{exp}}``."""
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
