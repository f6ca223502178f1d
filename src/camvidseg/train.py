"""Stage 4: train a torchvision segmentation network through an MMEngine Runner.

CUDA gets ``AmpOptimWrapper`` (bf16 where supported, else fp16), channels_last and cudnn.benchmark;
the CPU gets a plain ``OptimWrapper``. ``--gpus``/``--nodes`` > 1 relaunch it via ``launch`` (DDP;
gloo on the CPU). Checkpoints live in a work dir keyed by a fingerprint of the inputs and settings,
outside Snakemake's declared outputs, so a killed run resumes from its last epoch when the rule runs
again. Those own checkpoints are the only files loaded with full unpickling; user files are read
``weights_only``. The declared output is a small weights-only ``best.pth`` plus the history.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from . import command, launch
from .errors import UserError, cli
from .settings import describe


def train_help(key: str) -> str:
    """Help of a flag: the schema's description of ``train.<key>`` (or of a dotted key)."""
    return describe(key if "." in key else f"train.{key}")


TRUSTED_PREFIX = "camvidseg-workdir://"  # MMEngine checkpoint scheme for our own work dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = command.parser(__file__, __doc__)
    p.add_argument("--prepared", required=True, type=Path, help="folder from the convert stage")
    p.add_argument("--palette", required=True, type=Path, help="palette.json")
    p.add_argument("--out-model", required=True, type=Path, help="weights-only best model (.pth)")
    p.add_argument("--out-history", required=True, type=Path, help="loss/mIoU per step (.json)")
    p.add_argument("--work-root", required=True, type=Path, help="checkpoints, one dir per setup")
    p.add_argument("--model", default="deeplabv3_resnet50", help=describe("model.name"))
    p.add_argument("--backbone-weights", default="none", help="'none' or a weights file")
    p.add_argument("--load-from", default=None, help="initial weights of the whole model (file)")
    p.add_argument(
        "--aux-loss-weight", type=float, default=0.4, help=train_help("model.aux_loss_weight")
    )
    p.add_argument(
        "--device", default="auto", choices=["auto", "cuda", "cpu"], help=train_help("device")
    )
    p.add_argument("--gpus", type=int, default=1, help=train_help("gpus"))
    p.add_argument("--nodes", type=int, default=1, help=train_help("nodes"))
    p.add_argument("--epochs", type=int, default=10, help=train_help("epochs"))
    p.add_argument("--batch-size", type=int, default=3, help="per process")
    p.add_argument("--lr", type=float, default=2e-4, help=train_help("lr"))
    p.add_argument("--weight-decay", type=float, default=1e-4, help=train_help("weight_decay"))
    p.add_argument(
        "--optimizer", default="adamw", choices=["adamw", "sgd"], help=train_help("optimizer")
    )
    p.add_argument(
        "--crop-size",
        type=int,
        nargs=2,
        default=[360, 480],
        metavar=("H", "W"),
        help=train_help("crop_size"),
    )
    p.add_argument(
        "--scale-range", type=float, nargs=2, default=[0.5, 2.0], help=train_help("scale_range")
    )
    p.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=True, help=train_help("amp")
    )
    p.add_argument("--seed", type=int, default=0, help=train_help("seed"))
    p.add_argument("--max-keep-ckpts", type=int, default=2, help=train_help("max_keep_ckpts"))
    p.add_argument("--val-interval", type=int, default=1, help=train_help("val_interval"))
    p.add_argument("--warmup-iters", type=int, default=50, help=train_help("warmup_iters"))
    p.add_argument("--log-interval", type=int, default=10, help=train_help("log_interval"))
    p.add_argument("--num-workers", type=int, default=0, help="data loader workers per process")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="CPU threads of the job"
    )
    p.add_argument("--sync-bn", action="store_true", help=train_help("sync_bn"))
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    return p.parse_args(argv)


# Settings that change what is trained; the rest (paths, workers, threads) do not.
FINGERPRINT_KEYS = (
    "model",
    "backbone_weights",
    "load_from",
    "aux_loss_weight",
    "gpus",
    "nodes",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "optimizer",
    "crop_size",
    "scale_range",
    "amp",
    "seed",
    "val_interval",
    "warmup_iters",
    "sync_bn",
)


def fingerprint(args: argparse.Namespace, device: str) -> str:
    digest = hashlib.sha256()
    settings = {k: getattr(args, k) for k in FINGERPRINT_KEYS}
    settings["device"] = device
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for path in (args.prepared / "index.json", args.palette):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def resolve_device(requested: str) -> str:
    """The training device; asking for CUDA where there is none is an error, not a fallback."""
    if requested == "cpu":
        # Before CUDA initialises, so MMEngine (which picks CUDA when it can) uses the CPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    from .inference import pick_device

    device = pick_device(requested)
    if requested == "cuda" and device != "cuda":
        raise UserError("train.device: cuda, but no CUDA device is visible (set train.device: cpu)")
    return device


def epoch_checkpoints(work_dir: Path, prefix: str = "epoch_") -> list[tuple[int, Path]]:
    """(epoch, path) of ``{prefix}N.pth`` files, found by name (MMEngine's ``last_checkpoint``
    holds an absolute path, which breaks when the project moves)."""
    pattern = re.compile(rf"{prefix}(\d+)\.pth")
    return [(int(m.group(1)), p) for p in work_dir.glob(f"{prefix}*.pth")
            if (m := pattern.fullmatch(p.name))]  # fmt: skip


def latest_epoch_checkpoint(work_dir: Path) -> Path | None:
    found = epoch_checkpoints(work_dir)
    return max(found)[1] if found else None


def register_trusted_loader(work_dir: Path) -> None:
    """Let MMEngine unpickle full checkpoints (HistoryBuffer, numpy) from our work dir only.

    torch >= 2.6 loads ``weights_only`` by default, which breaks MMEngine's resume; we opt out
    deliberately for files this program wrote, and for nothing else.
    """
    import torch
    from mmengine.runner import CheckpointLoader

    root = work_dir.resolve()

    def load_trusted(filename: str, map_location=None):
        path = Path(filename.removeprefix(TRUSTED_PREFIX)).resolve()
        if root not in path.parents:
            raise UserError(f"{path}: refusing to unpickle a checkpoint outside {root}")
        return torch.load(path, map_location=map_location, weights_only=False)

    CheckpointLoader.register_scheme(TRUSTED_PREFIX, load_trusted, force=True)


def optim_wrapper_config(args: argparse.Namespace, device: str) -> dict:
    """AMP on CUDA only: MMEngine's AmpOptimWrapper asserts a GPU."""
    if args.optimizer == "adamw":
        optimizer = {"type": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay}
    else:
        optimizer = {
            "type": "SGD",
            "lr": args.lr,
            "momentum": 0.9,
            "weight_decay": args.weight_decay,
        }
    if device == "cuda" and args.amp:
        import torch

        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return {"type": "AmpOptimWrapper", "dtype": dtype, "optimizer": optimizer}
    return {"type": "OptimWrapper", "optimizer": optimizer}


def merge_history(work_dir: Path) -> dict:
    """Train/val scalars of every (resumed) run in ``work_dir``, later runs winning."""
    train, val = {}, {}
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
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


def export_best(work_dir: Path, out: Path, meta: dict) -> Path:
    import torch

    from .fileio import atomic_path

    best = epoch_checkpoints(work_dir, "best_mIoU_epoch_")
    source = max(best)[1] if best else latest_epoch_checkpoint(work_dir)
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)  # our own file
    meta = meta | {"epoch": checkpoint["meta"]["epoch"], "source": source.name}
    with atomic_path(out) as tmp:
        torch.save({"state_dict": checkpoint["state_dict"], "meta": meta}, tmp)
    return source


def train(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    import torch
    import torch.distributed as dist
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner, set_random_seed

    from .dataset import RandomScaleCropFlip, SegmentationDataset
    from .fileio import read_json, write_json
    from .metrics import SegMetric
    from .model import SegmentationModel, load_backbone, load_initial_weights
    from .palette import class_names
    from .progress import training_hook

    distributed = "LOCAL_RANK" in os.environ
    if distributed and not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    rank = dist.get_rank() if distributed else 0
    if device == "cpu":
        torch.set_num_threads(max(args.threads // max(args.gpus, 1), 1))

    palette = read_json(args.palette)
    names = class_names(palette)
    work_dir = args.work_root / fingerprint(args, device)
    work_dir.mkdir(parents=True, exist_ok=True)
    register_trusted_loader(work_dir)

    # The model is built before the Runner seeds everything: seed here so its init is reproducible.
    set_random_seed(args.seed)
    model = SegmentationModel(
        args.model, len(names), args.aux_loss_weight, channels_last=device == "cuda"
    )
    resume_from = latest_epoch_checkpoint(work_dir)
    if resume_from is not None:
        print(f"resuming from {resume_from.name} in {work_dir}", flush=True)
    else:  # initial weights; a resumed run gets all of its weights from the checkpoint
        if args.backbone_weights != "none":
            loaded = load_backbone(model.net, Path(args.backbone_weights))
            print(f"backbone: {loaded} tensors from {args.backbone_weights}")
        if args.load_from:
            load_initial_weights(model, Path(args.load_from))
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)

    train_set = SegmentationDataset(
        args.prepared, "train", RandomScaleCropFlip(tuple(args.crop_size), tuple(args.scale_range))
    )
    val_set = SegmentationDataset(args.prepared, "val")
    for dataset in (train_set, val_set):  # MMEngine hands this to the evaluator and visualizer
        dataset.metainfo = {"classes": names, "palette": [c["color"] for c in palette["classes"]]}
    loader = {
        "num_workers": args.num_workers,
        "persistent_workers": args.num_workers > 0,
        "pin_memory": device == "cuda",
        "collate_fn": {"type": "default_collate"},
    }
    optim_wrapper = optim_wrapper_config(args, device)
    print(
        f"device: {device}; optim wrapper: {optim_wrapper['type']}"
        + (f" ({optim_wrapper['dtype']})" if "dtype" in optim_wrapper else ""),
        flush=True,
    )
    backends = [{"type": "LocalVisBackend"}]
    try:
        import tensorboard  # noqa: F401

        backends.append({"type": "TensorboardVisBackend"})
    except ImportError:
        pass
    runner = Runner(
        model=model,
        work_dir=str(work_dir),
        train_dataloader=loader
        | {
            "batch_size": args.batch_size,
            "dataset": train_set,
            "sampler": {"type": "DefaultSampler", "shuffle": True},
        },
        val_dataloader=loader
        | {
            "batch_size": 1,
            "dataset": val_set,
            "sampler": {"type": "DefaultSampler", "shuffle": False},
        },
        # DDP gathers the ranks' results through files: in the work dir, not the project root.
        val_evaluator=Evaluator(SegMetric(names, collect_dir=str(work_dir / ".dist_test"))),
        train_cfg={"by_epoch": True, "max_epochs": args.epochs, "val_interval": args.val_interval},
        val_cfg={},
        optim_wrapper=optim_wrapper,
        param_scheduler=[
            {
                "type": "LinearLR",
                "start_factor": 1e-3,
                "by_epoch": False,
                "begin": 0,
                "end": args.warmup_iters,
            },
            {
                "type": "PolyLR",
                "power": 0.9,
                "eta_min": 0.0,
                "by_epoch": True,
                "begin": 0,
                "end": args.epochs,
                "convert_to_iter_based": True,
            },
        ],
        default_hooks={
            "checkpoint": {
                "type": "CheckpointHook",
                "interval": 1,
                "by_epoch": True,
                "max_keep_ckpts": args.max_keep_ckpts,
                "save_best": "mIoU",
                "rule": "greater",
            },
            "logger": {"type": "LoggerHook", "interval": args.log_interval},
        },
        custom_hooks=[training_hook()],
        visualizer={"type": "Visualizer", "vis_backends": backends},
        randomness={"seed": args.seed},
        launcher="pytorch" if distributed else "none",
        env_cfg={
            "cudnn_benchmark": device == "cuda",
            "dist_cfg": {"backend": "nccl" if device == "cuda" else "gloo"},
        },
        # Read by Runner from cfg: DDP wrapper (no device_ids on the CPU), SyncBN, torch.compile.
        cfg={
            "model_wrapper_cfg": (
                {"type": "MMDistributedDataParallel", "broadcast_buffers": False}
                | ({} if device == "cuda" else {"device_ids": None})
                if distributed
                else None
            ),
            "sync_bn": "torch" if args.sync_bn else None,
            "compile": args.compile or None,
        },
        resume=resume_from is not None,
        load_from=f"{TRUSTED_PREFIX}{resume_from.resolve()}" if resume_from else None,
    )
    runner.train()
    if rank == 0:
        meta = {
            "model": args.model,
            "num_classes": len(names),
            "classes": names,
            "aux_loss_weight": args.aux_loss_weight,
            "work_dir": work_dir.name,
        }
        source = export_best(work_dir, args.out_model, meta)
        write_json(args.out_history, merge_history(work_dir))
        print(f"exported {source.name} -> {args.out_model}")
    if distributed:
        dist.destroy_process_group()


@cli
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if launch.needed(args.gpus, args.nodes):
        launch.run("camvidseg.train", argv, args.gpus, args.nodes, args.device, args.threads)
        return
    train(args)


if __name__ == "__main__":
    main()
