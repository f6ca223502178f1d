"""Stage 4: train a torchvision segmentation network through an MMEngine Runner.

Settings arrive as one JSON object, ``--settings '{"model": {...}, "train": {...}}'`` (the config's
sections; the schema fills what is missing); what the job decides at run time (paths, processes,
loader workers, threads) are flags. ``train`` reads as its steps: the device (``device.py``), the
process group, the datasets, the work dir and checkpoint to resume from, the model, the Runner's
configuration (``runner_config``: a plain dict) and the export of ``best.pth`` and the history.
CUDA gets ``AmpOptimWrapper`` in ``device.precision`` and cudnn.benchmark; the CPU a plain
``OptimWrapper``; both channels_last. ``--gpus``/``--nodes`` > 1 relaunch it through ``launch``
(DDP; gloo on the CPU).

Checkpoints live in a work dir keyed by a fingerprint of the inputs and settings, outside
Snakemake's declared outputs, so a stopped run resumes where it stopped when the rule runs again,
exactly (``resume.py``). Those own checkpoints are the only files loaded with full unpickling; user
files are read ``weights_only``. The declared output is a small weights-only ``best.pth`` plus the
history; TensorBoard event files go to ``<work dir>/tensorboard``. torch and MMEngine are imported
inside the steps that use them, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from ..core import command, settings
from ..core.errors import UserError, cli
from ..workflow import codegraph
from ..workflow.experiments import flatten
from ..workflow.madeby import Record
from . import launch

STARTED = time.time()  # this process's start: an attempt's time includes its startup


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = command.parser(__file__, __doc__)
    p.add_argument(
        "--settings",
        required=True,
        help='JSON {"model": {...}, "train": {...}}: the config sections (missing keys take the '
        "schema's defaults)",
    )
    p.add_argument("--prepared", required=True, type=Path, help="folder from the convert stage")
    p.add_argument("--palette", required=True, type=Path, help="palette.json")
    p.add_argument("--out-model", required=True, type=Path, help="weights-only best model (.pth)")
    p.add_argument("--out-history", required=True, type=Path, help="loss/mIoU per step (.json)")
    p.add_argument("--work-root", required=True, type=Path, help="checkpoints, one dir per setup")
    p.add_argument(
        "--backbone-weights",
        help="weights file of model.backbone_weights, or none (required when that is imagenet: "
        "the workflow fetches it into resources/weights/)",
    )
    p.add_argument("--gpus", type=int, help="DDP processes per node (default: train.gpus)")
    p.add_argument("--nodes", type=int, help="SLURM nodes, a torchrun each (default: train.nodes)")
    p.add_argument("--num-workers", type=int, help=settings.describe("train.num_workers"))
    p.add_argument(
        "--threads",
        type=settings.positive_int,
        default=os.cpu_count() or 1,
        help="CPU threads of the job",
    )
    p.add_argument("--run-name", default="base", help="the run's name in MLflow (its experiment)")
    p.add_argument(
        "--mlflow-store",
        type=Path,
        default=Path("results/mlflow"),
        help="local MLflow store (mlflow.db and artifacts/) when train.trackers has mlflow",
    )
    args = p.parse_args(argv)
    args.model, args.train = read_settings(args.settings)
    args.gpus = args.gpus or args.train["gpus"]
    args.nodes = args.nodes or args.train["nodes"]
    return args


def read_settings(text: str) -> tuple[dict, dict]:
    """The model and train sections of ``--settings``, completed with the schema's defaults."""
    try:
        given = json.loads(text)
    except json.JSONDecodeError as err:
        # The help says JSON text; a file name is the natural slip. (os.path.isfile: a long
        # text is no file name, where Path.is_file raises "File name too long".)
        if os.path.isfile(text):
            raise UserError(
                f'--settings: takes the JSON text, not a file: --settings "$(cat {text})"'
            ) from None
        raise UserError(f"--settings: not JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(given, dict):
        raise UserError('--settings: expected a JSON object {"model": {...}, "train": {...}}')
    unknown = sorted(set(given) - {"model", "train"})
    if unknown:
        raise UserError(
            f"--settings: unknown section(s) {', '.join(unknown)} (expected model, train)"
        )
    return (
        settings.resolve("model", given.get("model")),
        settings.resolve("train", given.get("train")),
    )


def fingerprint(
    model: dict, train: dict, device: str, gpus: int, prepared: Path, palette: Path
) -> str:
    """Names the work dir: every setting that changes what is trained, the device ``auto`` became,
    the processes, the bytes of the prepared index and the palette, and the code training runs
    (a checkpoint of other code is never resumed)."""
    return settings.digest(
        settings.result_settings("model", model),
        settings.result_settings("train", train | {"device": device}),
        gpus,
        hashlib.sha256((prepared / "index.json").read_bytes()).hexdigest(),
        hashlib.sha256(palette.read_bytes()).hexdigest(),
        codegraph.source_digest("train"),
    )


@dataclasses.dataclass(frozen=True)
class Run:
    """What one training process decided at run time (the settings say what to train)."""

    device: str
    precision: str
    distributed: bool
    workers: int
    work_dir: Path
    resume_from: Path | None
    started: float = STARTED
    name: str = "base"  # the experiment's
    mlflow_store: Path = Path("results/mlflow")
    tracked_settings: dict = dataclasses.field(default_factory=dict)  # flat, for MLflow


def optim_wrapper_config(train: dict, precision: str) -> dict:
    """fp32: the plain wrapper; bf16: autocast without a loss scaler (``async_steps``); fp16:
    MMEngine's AmpOptimWrapper with its scaler (it asserts a GPU; the CPU runs fp32)."""
    optimizer = {"lr": train["lr"], "weight_decay": train["weight_decay"]}
    if train["optimizer"] == "adamw":
        optimizer |= {"type": "AdamW"}
    else:
        optimizer |= {"type": "SGD", "momentum": 0.9}
    if precision == "fp32":
        return {"type": "OptimWrapper", "optimizer": optimizer}
    if precision == "bf16":
        from .async_steps import AutocastOptimWrapper

        return {"type": AutocastOptimWrapper, "dtype": "bfloat16", "optimizer": optimizer}
    return {"type": "AmpOptimWrapper", "dtype": "float16", "optimizer": optimizer}


def lr_schedule(train: dict) -> list[dict]:
    """Linear warm-up over ``warmup_iters`` (none for 0: MMEngine refuses an empty range), then
    polynomial decay to 0 over the epochs."""
    warmup = {"type": "LinearLR", "start_factor": 1e-3, "by_epoch": False, "begin": 0,
              "end": train["warmup_iters"]}  # fmt: skip
    decay = {"type": "PolyLR", "power": 0.9, "eta_min": 0.0, "by_epoch": True, "begin": 0,
             "end": train["epochs"], "convert_to_iter_based": True}  # fmt: skip
    return [warmup, decay] if train["warmup_iters"] else [decay]


def loader_config(run: Run, batch_size: int, sampler: dict) -> dict:
    return {
        "batch_size": batch_size,
        "sampler": sampler,
        "num_workers": run.workers,
        "persistent_workers": run.workers > 0,
        "pin_memory": run.device == "cuda",  # with the preprocessor's non-blocking copies
        "collate_fn": {"type": "default_collate"},
    }


def wrapper_config(train: dict, run: Run) -> dict:
    """Read by the Runner from ``cfg``: DDP wrapper (no device_ids on the CPU), SyncBN, compile."""
    ddp = {"type": "MMDistributedDataParallel", "broadcast_buffers": False}
    if run.device == "cpu":
        ddp["device_ids"] = None
    return {
        "model_wrapper_cfg": ddp if run.distributed else None,
        "sync_bn": "torch" if train["sync_bn"] else None,
        "compile": train["compile"] or None,
    }


MLFLOW_EXPERIMENT = "camvidseg"  # one MLflow experiment; each training (experiment) a run in it


def mlflow_uri(store: Path) -> str:
    return f"sqlite:///{store.resolve() / 'mlflow.db'}"


def tracker_backends(train: dict, run: Run) -> list[dict]:
    """MMEngine's visualizer backends of ``train.trackers``. An MLflow run gets the run's name
    and settings as parameters; the scalars come from MMEngine's logger (loss per log interval,
    val scores per epoch), and at the end the work dir's logs and config as artifacts."""
    backends = []
    if "tensorboard" in train["trackers"]:
        backends.append(
            {"type": "TensorboardVisBackend", "save_dir": str(run.work_dir / "tensorboard")}
        )
    if "mlflow" in train["trackers"]:
        backends.append({
            "type": "MLflowVisBackend",
            "save_dir": str(run.work_dir / "mlflow"),
            "exp_name": MLFLOW_EXPERIMENT,
            "run_name": run.name,
            "tracking_uri": mlflow_uri(run.mlflow_store),
            "params": run.tracked_settings,
            "tags": {"work_dir": run.work_dir.name},
            "tracked_config_keys": {},  # the settings above, not every line of the runner table
        })  # fmt: skip
    return backends


def prepare_mlflow_store(store: Path) -> None:
    """Create the store and its experiment once: parallel trainings (a sweep) would race to."""
    import fcntl

    import mlflow

    store.mkdir(parents=True, exist_ok=True)
    with (store / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = mlflow.MlflowClient(mlflow_uri(store))
        if client.get_experiment_by_name(MLFLOW_EXPERIMENT) is None:
            client.create_experiment(
                MLFLOW_EXPERIMENT, artifact_location=(store / "artifacts").resolve().as_uri()
            )


def runner_config(train: dict, run: Run) -> dict:
    """The Runner's arguments but the model, the datasets and the metric: a plain table."""
    from ..core.progress import training_hook
    from ..data.dataset import SameSizeBatches
    from . import resume
    from .async_steps import DeferredLossHook

    shuffled = {"type": resume.SeededSampler, "shuffle": True, "seed": train["seed"]}
    in_order = {"type": "DefaultSampler", "shuffle": False}
    epochs = {"type": resume.ResumableEpochLoop, "max_epochs": train["epochs"]}
    checkpoint = {"type": "CheckpointHook", "interval": 1, "by_epoch": True, "save_best": "mIoU",
                  "rule": "greater", "max_keep_ckpts": train["max_keep_ckpts"],
                  "backend_args": resume.ATOMIC_WRITES}  # fmt: skip
    backends = [{"type": "LocalVisBackend"}, *tracker_backends(train, run)]
    env = {"cudnn_benchmark": run.device == "cuda" and not train["deterministic"],
           "dist_cfg": {"backend": "nccl" if run.device == "cuda" else "gloo"}}  # fmt: skip
    resume_from = run.resume_from and f"{resume.TRUSTED_PREFIX}{run.resume_from.resolve()}"
    return {
        "work_dir": str(run.work_dir),
        # Every batch full: BatchNorm needs two images (pools_before_batchnorm), per process.
        "train_dataloader": loader_config(run, train["batch_size"], shuffled) | {"drop_last": True},
        # Validation batches as many images as training (no gradients kept: full-size images fit
        # as crops do), each batch of one image size.
        "val_dataloader": loader_config(run, train["batch_size"], in_order)
        | {"batch_sampler": {"type": SameSizeBatches}},
        "train_cfg": epochs | {"val_interval": train["val_interval"]},
        "val_cfg": {},
        "optim_wrapper": optim_wrapper_config(train, run.precision),
        "param_scheduler": lr_schedule(train),
        "default_hooks": {
            "runtime_info": {"type": DeferredLossHook, "interval": train["log_interval"]},
            "checkpoint": checkpoint,
            "logger": {"type": "LoggerHook", "interval": train["log_interval"]},
        },
        "custom_hooks": [
            {"type": resume.IterationSeedHook},
            # DDP without SyncBN: each rank keeps its own BatchNorm statistics; averaged at each
            # epoch's end (before its checkpoint and validation) so every rank holds one model.
            {"type": "SyncBuffersHook"},
            {"type": resume.SignalCheckpointHook},
            {"type": resume.AttemptClockHook, "started": run.started},
            training_hook(),  # the one updating progress line on the terminal
        ],
        "visualizer": {"type": "Visualizer", "vis_backends": backends},
        # train.deterministic is device.use_deterministic_kernels: MMEngine's own switch makes
        # the ops that lack a deterministic CUDA kernel raise.
        "randomness": {"seed": train["seed"]},
        "launcher": "pytorch" if run.distributed else "none",
        "env_cfg": env,
        "cfg": wrapper_config(train, run),
        "resume": run.resume_from is not None,
        "load_from": resume_from,
    }


def as_ran(config: dict) -> dict:
    """The Runner's ``cfg``, which it dumps to the work dir and logs: the whole table that ran as
    plain data (a class by its dotted name, an object by its class's), unset top-level entries
    left out, and at its top level what the Runner reads from ``cfg`` (DDP wrapper, SyncBN,
    compile: an absent entry reads as unset). A None inside an entry is a setting and stays: DDP's
    ``device_ids=None`` on the CPU, which MMEngine would otherwise fill with the local rank."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, type):
            return f"{value.__module__}.{value.__qualname__}"
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        return {"type": plain(type(value))}  # a hook given as an object

    table = {k: v for k, v in config.items() if k != "cfg"} | config["cfg"]
    return {k: plain(v) for k, v in table.items() if v is not None}


def with_datasets(config: dict, train_set, val_set) -> dict:
    """``config`` with the dataset objects in its loaders (kept out of the inspectable table)."""
    from .resume import SeededSamples

    train_loader = config["train_dataloader"] | {"dataset": SeededSamples(train_set)}
    val_loader = config["val_dataloader"] | {"dataset": val_set}
    return config | {"train_dataloader": train_loader, "val_dataloader": val_loader}


def init_distributed(device: str, gpus: int, threads: int) -> int:
    """Join the process group when started by torchrun; returns this process's rank."""
    import torch
    import torch.distributed as dist

    if device == "cpu":
        torch.set_num_threads(max(threads // gpus, 1))
    if "LOCAL_RANK" not in os.environ:
        return 0
    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist.get_rank()


def build_datasets(prepared: Path, train: dict, palette: dict) -> tuple:
    """The augmented train split and the val split, with the metadata MMEngine passes on."""
    from ..data.dataset import RandomScaleCropFlip, SegmentationDataset
    from ..data.palette import class_names

    augment = RandomScaleCropFlip(tuple(train["crop_size"]), tuple(train["scale_range"]))
    datasets = SegmentationDataset(prepared, "train", augment), SegmentationDataset(prepared, "val")
    meta = {"classes": class_names(palette), "palette": [c["color"] for c in palette["classes"]]}
    for dataset in datasets:
        dataset.metainfo = meta
    return datasets


def iterations_per_epoch(images: int, model: dict, train: dict, gpus: int) -> int:
    """Full batches per epoch (the last incomplete one is dropped); refuses what cannot train."""
    from .model import pools_before_batchnorm

    batch = train["batch_size"]
    if batch < 2 and pools_before_batchnorm(model["name"]) and not (train["sync_bn"] and gpus > 1):
        raise UserError(
            f"train.batch_size: 1 per process, but {model['name']}'s image pooling needs BatchNorm "
            "over at least 2 images (raise it, or use train.sync_bn with several GPUs)"
        )
    per_epoch = images // gpus // batch if images >= gpus else 0
    if per_epoch == 0:
        raise UserError(
            f"train.batch_size: {batch} x {gpus} process(es) is more than the {images} training "
            "images: no full batch to train on"
        )
    return per_epoch


def backbone_file(model: dict, flag: str | None) -> Path | None:
    choice = flag or model["backbone_weights"]
    if choice == "imagenet":
        raise UserError(
            "model.backbone_weights: imagenet needs the fetched file: pass --backbone-weights FILE "
            "(the workflow's fetch_backbone_weights rule makes it)"
        )
    return None if choice in ("none", "") else Path(choice)


def loss_class_weights(train: dict, train_set, num_classes: int):
    """``train.class_weights``: None, or the median-frequency weights of the training masks."""
    from ..data.dataset import median_frequency_weights

    if train["class_weights"] == "none":
        return None
    weights = median_frequency_weights(train_set, num_classes)
    print("class weights (median frequency): " + ", ".join(f"{w:.2f}" for w in weights.tolist()))
    return weights


def build_model(args: argparse.Namespace, num_classes: int, run: Run, class_weights=None):
    """The network, seeded; initial weights unless resuming (the checkpoint has them all)."""
    from mmengine.runner import set_random_seed

    from .model import SegmentationModel, load_backbone, load_initial_weights

    # The model is built before the Runner seeds everything: seed here so its init is reproducible.
    set_random_seed(args.train["seed"])
    model = SegmentationModel(
        args.model["name"], num_classes, args.model["aux_loss_weight"], class_weights=class_weights
    )
    model.precision = run.precision
    backbone = backbone_file(args.model, args.backbone_weights)
    if run.resume_from is None and backbone is not None:
        print(f"backbone: {load_backbone(model.net, backbone)} tensors from {backbone}")
    if run.resume_from is None and args.train["load_from"]:
        skipped = load_initial_weights(model, Path(args.train["load_from"]))
        if skipped:
            print(
                f"warning: train.load_from: {args.train['load_from']}: {len(skipped)} tensors of "
                f"another shape left as initialised (another class count?): {', '.join(skipped)}",
                file=sys.stderr,
            )
    return model  # channels_last on every device (the model's own default)


@contextlib.contextmanager
def removed_if_failed(work_dir: Path, rank: int):
    """A run that fails before its first checkpoint leaves no work dir (only its logs) behind."""
    try:
        yield
    except BaseException:
        if rank == 0 and work_dir.is_dir() and not any(work_dir.glob("*.pth")):
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


def merge_history(work_dir: Path) -> dict:
    """Train/val scalars of every (resumed) run in ``work_dir``, later runs winning. A killed run
    may have left half a line at the end of its log: it is skipped."""
    train, val = {}, {}
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in scalars.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in record:
                train[record["step"]] = {
                    "iter": record["step"],
                    "epoch": record.get("epoch"),
                    "loss": record["loss"],
                    "lr": record.get("lr"),
                }
            elif "mIoU" in record:
                val[record["step"]] = {"epoch": record["step"]} | {
                    k: record[k] for k in ("mIoU", "mAcc", "aAcc", "mDice") if k in record
                }
    return {"train": [train[k] for k in sorted(train)], "val": [val[k] for k in sorted(val)]}


def best_checkpoint(work_dir: Path) -> Path:
    """MMEngine's best-by-mIoU checkpoint (the newest, if a moved project kept an older one)."""
    best = [(int(m[1]), p) for p in work_dir.glob("best_mIoU_epoch_*.pth")
            if (m := re.fullmatch(r"best_mIoU_epoch_(\d+)\.pth", p.name))]  # fmt: skip
    if not best:
        raise UserError(f"{work_dir}: training left no best checkpoint")
    return max(best)[1]


def export_outputs(args: argparse.Namespace, work_dir: Path, names: list[str], run: Run) -> None:
    """The weights-only ``best.pth`` (with what evaluate needs to rebuild it) and the history."""
    import torch

    from ..core.fileio import atomic_path, write_json
    from .resume import load_trusted

    source = best_checkpoint(work_dir)
    checkpoint = load_trusted(source, work_dir, map_location="cpu")
    meta = {
        "model": args.model["name"],
        "num_classes": len(names),
        "classes": names,
        "aux_loss_weight": args.model["aux_loss_weight"],
        "precision": run.precision,  # of validation: evaluate scores in it too
        "work_dir": work_dir.name,
        "epoch": checkpoint["meta"]["epoch"],
        "source": source.name,
    }
    with atomic_path(args.out_model) as tmp:
        torch.save({"state_dict": checkpoint["state_dict"], "meta": meta}, tmp)
    from .resume import attempts

    write_json(args.out_history, merge_history(work_dir) | {"attempts": attempts(work_dir)})
    print(f"exported {source.name} -> {args.out_model}")


def loader_workers(args: argparse.Namespace, device: str) -> int:
    """``--num-workers``, else ``train.num_workers``; -1: on a GPU the job's threads, for every
    process (a GPU's step outruns one worker's augmentation; split over 8 ranks they would be
    one each), on the CPU none: the threads compute and loading stays in the process."""
    if args.num_workers is not None:
        return args.num_workers
    if args.train["num_workers"] >= 0:
        return args.train["num_workers"]
    return args.threads if device == "cuda" else 0


def plan_run(args: argparse.Namespace, device: str, images: int) -> Run:
    """The work dir of these settings and inputs, and the checkpoint to resume from in it."""
    from ..core.device import precision
    from .resume import newest_readable_checkpoint, register_trusted_loader

    per_epoch = iterations_per_epoch(images, args.model, args.train, args.gpus)
    work_dir = args.work_root / fingerprint(
        args.model, args.train, device, args.gpus, args.prepared, args.palette
    )
    register_trusted_loader(work_dir)
    resume_from = newest_readable_checkpoint(work_dir, per_epoch)
    if resume_from is not None:
        print(f"resuming from {resume_from.name} in {work_dir}", flush=True)
    return Run(
        device=device,
        precision=precision(device, args.train["amp"]),
        distributed="LOCAL_RANK" in os.environ,
        workers=loader_workers(args, device),
        work_dir=work_dir,
        resume_from=resume_from,
        name=args.run_name,
        mlflow_store=args.mlflow_store,
        tracked_settings=flatten({"model": args.model, "train": args.train}),
    )


def train(args: argparse.Namespace) -> None:
    from mmengine.config import Config
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner

    from ..core.device import resolve, use_deterministic_kernels
    from ..core.fileio import read_json
    from ..data.palette import class_names
    from ..evaluation.metrics import SegMetric
    from .allocator import keep_freed_memory

    keep_freed_memory()  # every step reuses the last one's memory instead of faulting it in
    device = resolve(args.train["device"], "train.device")
    if args.train["deterministic"]:
        use_deterministic_kernels()
    rank = init_distributed(device, args.gpus, args.threads)
    palette = read_json(args.palette)
    names = class_names(palette)
    train_set, val_set = build_datasets(args.prepared, args.train, palette)
    run = plan_run(args, device, len(train_set))
    model = build_model(
        args, len(names), run, loss_class_weights(args.train, train_set, len(names))
    )
    config = runner_config(args.train, run)
    if rank == 0 and "mlflow" in args.train["trackers"]:
        prepare_mlflow_store(run.mlflow_store)
    print(f"device: {device}; optim wrapper: {config['optim_wrapper']['type']} ({run.precision})")
    with removed_if_failed(run.work_dir, rank):
        runner = Runner(
            # DDP gathers the ranks' results through files: in the work dir, not the project root.
            model=model,
            val_evaluator=Evaluator(SegMetric(names, collect_dir=str(run.work_dir / ".dist_test"))),
            # Unformatted text (a key a line) is still Python: yapf would cost ~0.1 s each of
            # the Runner's log, dump and every checkpoint's copy of it.
            **with_datasets(config | {"cfg": Config(as_ran(config), format_python_code=False)},
                            train_set, val_set),
        )  # fmt: skip
        runner.train()
    if rank == 0:
        export_outputs(args, run.work_dir, names, run)
    if run.distributed:
        import torch.distributed as dist

        dist.destroy_process_group()


@cli
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    made = Record(
        __file__,
        args,
        [args.prepared, args.palette, args.backbone_weights],
        [args.out_model, args.out_history],
    )
    if launch.needed(args.gpus, args.nodes):
        from ..core.device import resolve

        device = resolve(args.train["device"], "train.device")
        launch.run("camvidseg.training.train", argv, args.gpus, args.nodes, device, args.threads)
    else:
        train(args)
    made.write()


if __name__ == "__main__":
    main()
