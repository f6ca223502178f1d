"""The GPU proof, version 2 (issue 20): the workflow's own training at real size, proven with
numbers. ``bash benchmarks/gpu_proof.sh`` installs the wheels and runs this; ``--cpu-smoke`` runs
every step tiny on the CPU and writes the same JSON shape.

Steps, each in its own process under its own time limit (a failure is recorded, the rest runs):
  environment       card, driver, versions; the card's dense bf16 peak that MFU divides by
  prepare           the data folder (the SegNet trainval copy) through the project's own extract,
                    palette and convert stages (uint8 cache), and a generated set in the original
                    example's layout (RGB masks, class_dict.csv) at the measured size
  trainer_checks    trainer_gpu_check.py's deterministic pair, SIGUSR1 resume and evaluate of that
                    model (small; runs beside prepare, before anything is timed)
  runner            training throughput through ``camvidseg train`` (its MMEngine Runner, the real
                    loader: 360x480 images rescaled to SIZE and cropped), batch BATCH, the recipe's
                    precision (bf16 on the card), ``train.compile`` off
  original          the original example as shipped: its dataset in the loop (num_workers 0),
                    batch 3, fp16 autocast + GradScaler, NCHW
  original_equal    the same at batch BATCH in the runner's precision (bf16, no scaler)
  time_to_accuracy  the whole train split from scratch (benchmarks/gpu_time_to_accuracy.yaml)
                    until val mIoU >= 0.55 or 4 minutes; the curve (seconds, epoch, mIoU) is kept
  evaluate          the evaluate stage on the device with that model vs its in-training val score
                    (|difference| <= 0.005, in the precision best.pth records)
  compile           the runner arm with ``train.compile: true`` (only when time is left)
Each throughput arm: img/s over steady iterations, the GPU-busy share (first to last kernel of a
profiled window), peak memory, and MFU = counted training FLOPs per image (forward + backward,
``torch.utils.flop_counter``) x img/s / the card's dense bf16 peak. (That counter over-counts the
backward of grouped convolutions: the figures mean something for the ResNet the GPU run measures,
not for the smoke's MobileNet.)

Writes ``gpu_proof.json`` (one key per step, rewritten after each) to --results
(default ``benchmarks/results/``; the smoke's default is a temporary folder) and to ``$OUT``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

TARGET_MIOU = 0.55
TTA_LIMIT_S = 240
EVAL_TOLERANCE = 0.005
# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's data sheets; the first name
# fragment found in torch.cuda.get_device_name() wins.
DENSE_BF16_PEAK = (
    ("H200", 989.4e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362.05e12),
    ("A10G", 70e12),
)


def sizes(smoke: bool) -> dict:
    """What each step runs: real sizes on the GPU, tiny ones for the CPU smoke."""
    if smoke:
        return {
            "device": "cpu",
            "model": "lraspp_mobilenet_v3_large",
            "size": [48, 64],
            "batch": 2,
            "shipped_batch": 2,
            "warmup": 1,
            "iters": 2,
            "profiled": 1,
            "original_images": 6,
            "threads": 2,
            "limits": {
                "prepare": 600,
                "trainer_checks": 1200,
                "arm": 600,
                "time_to_accuracy": 900,
                "evaluate": 300,
            },
        }
    return {
        "device": "cuda",
        "model": "deeplabv3_resnet50",
        "size": [720, 960],
        "batch": 16,
        "shipped_batch": 3,
        "warmup": 4,
        "iters": 14,
        "profiled": 4,
        "original_images": 20,
        "threads": os.cpu_count() or 8,
        "limits": {
            "prepare": 120,
            "trainer_checks": 200,
            "arm": 100,
            "time_to_accuracy": TTA_LIMIT_S + 60,
            "evaluate": 60,
        },
    }


def dense_bf16_peak(name: str) -> float | None:
    return next((peak for fragment, peak in DENSE_BF16_PEAK if fragment in name), None)


def mfu(flops_per_image: float, img_per_s: float, peak: float | None) -> float | None:
    return None if peak is None else flops_per_image * img_per_s / peak


def train_flops_per_image(net, size, device: str) -> float:
    """FLOPs of one training image, forward and backward (a batch of two: DeepLabV3's image
    pooling cannot normalise a batch of one in training mode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net.train()
    inputs = torch.zeros(2, 3, *size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        outputs = net(inputs)
        sum(value.float().mean() for value in outputs.values()).backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def peak_memory_mb(device: str) -> float:
    from train_throughput import peak_memory_mb as measured

    return measured(device)


def kernel_busy_share(prof) -> float:
    from torch.autograd import DeviceType
    from train_throughput import busy_share

    spans = [
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset"))
    ]
    return busy_share(spans)


# ---------------------------------------------------------------- the runner arm and the TTA run


class Measured(Exception):
    """Raised by the meter once it has what it needs: the run ends there."""


def meter_hook(plan: dict, device: str, result: dict):
    """An MMEngine hook timing iterations warmup..warmup+iters (synchronised at both ends only),
    counting the host syncs of each of those iterations on CUDA (torch's sync debug mode: only
    the iterations that log should have one), then profiling ``profiled`` more, then ending the
    run."""
    import warnings

    import torch
    from mmengine.hooks import Hook

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    class Meter(Hook):
        priority = "VERY_LOW"

        def before_train(self, runner) -> None:
            self.started = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            done, start = runner.iter + 1, plan["warmup"]
            if done == 1:
                result["first_iteration_s"] = round(time.perf_counter() - self.started, 2)
            if start < done <= start + plan["iters"] and device == "cuda":
                syncs = result.setdefault("host_syncs_per_timed_iteration", [])
                syncs.append(sum("synchroniz" in str(w.message) for w in self.caught))
                self.caught.clear()
            if done == start:
                sync()
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    self.warnings = warnings.catch_warnings(record=True)
                    self.caught = self.warnings.__enter__()
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                self.timed_from = time.perf_counter()
            elif done == start + plan["iters"]:
                if device == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
                    self.warnings.__exit__(None, None, None)
                sync()
                seconds = time.perf_counter() - self.timed_from
                result["img_per_s"] = plan["iters"] * plan["batch"] / seconds
                result["peak_mb"] = peak_memory_mb(device)
                if device != "cuda":
                    raise Measured
                from torch.profiler import ProfilerActivity, profile

                self.profiler = profile(activities=[ProfilerActivity.CUDA])
                self.profiler.start()
            elif done == start + plan["iters"] + plan["profiled"]:
                sync()
                self.profiler.stop()
                result["gpu_busy"] = kernel_busy_share(self.profiler)
                raise Measured

    return Meter()


def run_training(settings: dict, prepared: Path, work: Path, hooks: list, threads: int) -> None:
    """The train stage in this process, exactly as the rule runs it, plus ``hooks``."""
    from camvidseg.training import train as stage

    original = stage.runner_config

    def with_hooks(train, run):
        config = original(train, run)
        return config | {"custom_hooks": [*config["custom_hooks"], *hooks]}

    stage.runner_config = with_hooks
    argv = [
        "--settings",
        json.dumps(settings),
        "--prepared",
        str(prepared),
        "--palette",
        str(prepared.parent / "palette.json"),
        "--backbone-weights",
        "none",
        "--out-model",
        str(work / "best.pth"),
        "--out-history",
        str(work / "history.json"),
        "--work-root",
        str(work / "ckpt"),
        "--threads",
        str(threads),
    ]
    stage.train(stage.parse_args(argv))


def runner_arm(args, plan: dict, compile_model: bool) -> dict:
    import torch

    from camvidseg.data.dataset import SegmentationDataset
    from camvidseg.training.model import SegmentationModel

    prepared = args.work / "trainval/prepared"
    height, width = SegmentationDataset(prepared, "train").image_size(0)
    scale = max(plan["size"][0] / height, plan["size"][1] / width, 1.0)
    per_epoch = len(SegmentationDataset(prepared, "train")) // plan["batch"]
    needed = plan["warmup"] + plan["iters"] + plan["profiled"]
    settings = {
        "model": {"name": plan["model"], "backbone_weights": "none"},
        "train": {
            "device": plan["device"],
            "epochs": -(-needed // per_epoch) + 1,
            "batch_size": plan["batch"],
            "crop_size": plan["size"],
            "scale_range": [scale, scale],
            "val_interval": 1000,
            "log_interval": 10,
            "warmup_iters": 1,
            "compile": compile_model,
        },
    }
    classes = len(json.loads((prepared.parent / "palette.json").read_text())["classes"])
    net = SegmentationModel(plan["model"], classes).net.to(plan["device"])
    flops = train_flops_per_image(net, plan["size"], plan["device"])
    del net
    if plan["device"] == "cuda":
        torch.cuda.empty_cache()
    result = {
        "flops_per_image": flops,
        "batch": plan["batch"],
        "loader_scale": scale,
    }
    with tempfile.TemporaryDirectory() as work, contextlib.suppress(Measured):
        run_training(
            settings,
            prepared,
            Path(work),
            [meter_hook(plan, plan["device"], result)],
            plan["threads"],
        )
    return result


def time_to_accuracy(args, plan: dict) -> dict:
    import yaml
    from mmengine.hooks import Hook

    recipe = yaml.safe_load((REPO / "benchmarks/gpu_time_to_accuracy.yaml").read_text())
    train = recipe["train"] | {"device": plan["device"]}
    if args.cpu_smoke:  # two epochs of tiny crops: the step runs, the target is not the point
        train |= {
            "epochs": 2,
            "batch_size": 4,
            "crop_size": plan["size"],
            "val_interval": 1,
            "warmup_iters": 2,
            "log_interval": 2,
        }
    limit = TTA_LIMIT_S
    curve: list[dict] = []

    class Clock(Hook):
        priority = "VERY_LOW"

        def before_train(self, runner) -> None:
            self.started = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if time.perf_counter() - self.started > limit:
                runner.train_loop.stop_training = True  # at this epoch's end

        def after_val_epoch(self, runner, metrics=None) -> None:
            seconds = time.perf_counter() - self.started
            curve.append(
                {"seconds": round(seconds, 1), "epoch": runner.epoch, "mIoU": metrics["mIoU"]}
            )
            if metrics["mIoU"] >= TARGET_MIOU:
                runner.train_loop.stop_training = True

    work = args.work / "time_to_accuracy"
    settings = {"model": recipe["model"], "train": train}
    run_training(settings, args.work / "trainval/prepared", work, [Clock()], plan["threads"])
    reached = next((point for point in curve if point["mIoU"] >= TARGET_MIOU), None)
    history = json.loads((work / "history.json").read_text())
    return {
        "recipe": settings,
        "target_mIoU": TARGET_MIOU,
        "limit_s": limit,
        "train_images": len(
            json.loads((args.work / "trainval/prepared/index.json").read_text())["splits"]["train"]
        ),
        "curve": curve,
        "loss_curve": [[r["iter"], r["loss"]] for r in history["train"]],
        "reached_at_s": reached and reached["seconds"],
        "passed": reached is not None and reached["seconds"] <= limit,
        "best_mIoU": max(p["mIoU"] for p in curve),
    }


def evaluate_step(args, plan: dict) -> dict:
    import torch

    work = args.work / "time_to_accuracy"
    prepared = args.work / "trainval/prepared"
    out = args.work / "evaluate_val.json"
    command = [
        sys.executable,
        "-m",
        "camvidseg",
        "evaluate",
        "--model",
        str(work / "best.pth"),
        "--prepared",
        str(prepared),
        "--palette",
        str(prepared.parent / "palette.json"),
        "--split",
        "val",
        "--device",
        plan["device"],
        "--out-json",
        str(out),
        "--out-csv",
        str(args.work / "evaluate_val.csv"),
    ]
    started = time.perf_counter()
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    scores = json.loads(out.read_text())
    meta = torch.load(work / "best.pth", weights_only=True)["meta"]
    history = json.loads((work / "history.json").read_text())
    validation = next(r["mIoU"] for r in history["val"] if r["epoch"] == meta["epoch"])
    difference = abs(scores["mIoU"] - validation)
    return {
        "evaluate_mIoU": scores["mIoU"],
        "validation_mIoU": validation,
        "abs_difference": difference,
        "tolerance": EVAL_TOLERANCE,
        "precision_recorded": meta["precision"],
        "precision_used": scores["precision"],
        "precision_line": next(
            line for line in printed.splitlines() if line.startswith("precision:")
        ),
        "seconds": round(seconds, 1),
        "passed": difference <= EVAL_TOLERANCE and scores["precision"] == meta["precision"],
    }


# ---------------------------------------------------------------- the original example's arms


def original_arm(args, plan: dict, precision: str, batch: int) -> dict:
    """The original example's loop (``original_example``: its dataset, num_workers 0, NCHW) at
    ``batch`` in ``precision``: fp16 with a GradScaler as shipped, bf16 without one."""
    import torch
    import torch.nn.functional as F
    from original_example import original_dataset
    from train_throughput import endless, gpu_busy_share, timed

    from camvidseg.training.segmenter import build_network

    device = plan["device"]
    root = (args.work / "original_root.txt").read_text()
    dataset = original_dataset(root, "train")
    loader = endless(
        torch.utils.data.DataLoader(
            dataset, batch_size=batch, shuffle=True, num_workers=0, drop_last=True
        )
    )
    classes = len(dataset.color_to_class)
    net = build_network(plan["model"], classes, aux_loss=False).to(device)
    flops = train_flops_per_image(net, plan["size"], device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-4)
    mixed = device == "cuda" and precision != "fp32"
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler(enabled=mixed and precision == "fp16")

    def step():
        images, samples = next(loader)
        images, labels = images.to(device), samples["labels"].to(device)
        with torch.autocast(device, dtype=dtype, enabled=mixed):
            loss = F.cross_entropy(net(images)["out"], labels)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    seconds = timed(step, plan["iters"], plan["warmup"], device)
    result = {
        "flops_per_image": flops,
        "batch": batch,
        "precision": precision if mixed else "fp32",
        "grad_scaler": scaler.is_enabled(),
        "img_per_s": plan["iters"] * batch / seconds,
        "peak_mb": peak_memory_mb(device),
    }
    if device == "cuda":
        result["gpu_busy"] = gpu_busy_share(step, plan["profiled"])
    return result


# ---------------------------------------------------------------- steps run in the parent


def environment(plan: dict) -> dict:
    import torch

    import camvidseg

    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "camvidseg_src": str(Path(camvidseg.__file__).parent),
    }
    if plan["device"] == "cuda":
        name = torch.cuda.get_device_name()
        query = [
            "nvidia-smi",
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
        ]
        env |= {
            "device": name,
            "dense_bf16_peak_tflops": (dense_bf16_peak(name) or 0) / 1e12 or None,
            "nvidia_smi": subprocess.run(query, capture_output=True, text=True).stdout.strip(),
        }
    else:
        env |= {"device": "cpu", "dense_bf16_peak_tflops": None}
    for module in ("mmengine", "snakemake", "torchvision", "numpy", "cv2"):
        try:
            env[module] = getattr(__import__(module), "__version__", "?")
        except ImportError:
            env[module] = None
    return env


def with_test_split(data: Path, work: Path) -> Path:
    """``data`` itself, or where it has no test split (the trainval copy), a folder of links to
    it whose ``test`` is its ``val``: the proof uses train and val only, and the extract stage
    of this version wants all three."""
    if (data / "test").is_dir():
        return data
    view = work / "data_view"
    view.mkdir()
    for name in ("train", "trainannot", "val", "valannot"):
        (view / name).symlink_to(data / name)
    (view / "test").symlink_to(data / "val")
    (view / "testannot").symlink_to(data / "valannot")
    return view


def prepare(args, plan: dict) -> dict:
    from camvid_like import prepared_folder, prepared_set

    from camvidseg.core.fileio import write_json

    started = time.perf_counter()
    data = with_test_split(args.data, args.work)
    manifest, palette, prepared, convert_s = prepared_folder(
        args.work / "trainval", data, plan["threads"]
    )
    write_json(prepared.parent / "palette.json", palette)
    (args.work / "original/extracted").mkdir(parents=True, exist_ok=True)
    sizes = {"train": plan["original_images"], "val": 1, "test": 1}
    original = prepared_set(args.work / "original", sizes, *plan["size"], plan["threads"])[0]
    (args.work / "original_root.txt").write_text(original["root"])
    return {
        "data": str(args.data),
        "layout": manifest["layout"],
        "images": {split: len(pairs) for split, pairs in manifest["splits"].items()},
        "classes": len(palette["classes"]),
        "convert_s": round(convert_s, 1),
        "original_layout_images": sizes,
        "seconds": round(time.perf_counter() - started, 1),
    }


def trainer_checks_command(args, plan: dict) -> tuple[list, dict]:
    env = {
        **os.environ,
        "CHECK_DEVICE": plan["device"],
        "CHECK_PARTS": "deterministic",
        "CHECK_WORK": str(args.work / "trainer_checks"),
        "CHECK_MODEL": plan["model"],
        "CHECK_RESULT": str(args.work / "trainer_gpu_check.json"),
        "OUT": str(args.work / "trainer_checks_logs"),
    }
    if args.cpu_smoke:
        env["CHECK_SIZE"] = ",".join(map(str, plan["size"]))
    return [sys.executable, str(REPO / "benchmarks/trainer_gpu_check.py")], env


def trainer_verdict(report: dict) -> dict:
    """The parts of trainer_gpu_check.py's report the issue asks for, with a verdict each."""
    pair, resumed = (
        report.get("deterministic_repeat", {}),
        report.get("signal_resume_vs_uninterrupted_deterministic", {}),
    )
    stopped = report.get("run_f_stopped", {})
    evaluated = report.get("evaluate_vs_validation_c", {})
    return {
        "deterministic_pair": pair,
        "deterministic_pair_identical": pair.get("differing") == 0 and pair.get("history_equal"),
        "sigusr1_stop": stopped,
        "sigusr1_stopped_with_138": stopped.get("rc") == 138,
        "sigusr1_resume_vs_uninterrupted": resumed,
        "sigusr1_resume_identical": resumed.get("differing") == 0 and resumed.get("history_equal"),
        "evaluate_vs_validation": evaluated,
    }


STEPS = (
    "environment",
    "prepare",
    "trainer_checks",
    "runner",
    "original",
    "original_equal",
    "time_to_accuracy",
    "evaluate",
    "compile",
)


def child(args, plan: dict, step: str) -> dict:
    """One timed step in this (fresh) process."""
    import torch

    torch.set_num_threads(plan["threads"])
    if step in ("runner", "compile"):
        return runner_arm(args, plan, compile_model=step == "compile")
    if step == "original":
        return original_arm(args, plan, "fp16", plan["shipped_batch"])
    if step == "original_equal":
        return original_arm(args, plan, "bf16", plan["batch"])
    if step == "time_to_accuracy":
        return time_to_accuracy(args, plan)
    return evaluate_step(args, plan)


def in_child(args, step: str, limit: float) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        step,
        "--work",
        str(args.work),
        "--data",
        str(args.data),
    ] + (["--cpu-smoke"] if args.cpu_smoke else [])
    started = time.perf_counter()
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"error": f"over its limit of {limit:.0f} s"}
    seconds = round(time.perf_counter() - started, 1)
    (args.work / f"{step}.log").write_text(out.stdout + out.stderr)
    if out.returncode:
        return {"error": (out.stdout + out.stderr)[-2000:], "seconds": seconds}
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"step_s": seconds}


def with_mfu(arm: dict, peak: float | None) -> dict:
    if "img_per_s" not in arm:
        return arm
    return arm | {"mfu": mfu(arm["flops_per_image"], arm["img_per_s"], peak)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every step tiny, on the CPU")
    parser.add_argument(
        "--data",
        type=Path,
        help="SegNet-layout folder (default: .gpu_data/"
        "camvid-segnet-trainval, else ../shared/data/camvid-segnet-subset)",
    )
    parser.add_argument("--results", type=Path, help="folder of gpu_proof.json")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument(
        "--budget",
        type=float,
        default=470.0,
        help="seconds of the whole proof: compile runs only if it fits",
    )
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data is None:
        found = [
            REPO / ".gpu_data/camvid-segnet-trainval",
            REPO.parent / "shared/data/camvid-segnet-subset",
        ]
        args.data = next((p for p in found if p.is_dir()), found[0])
    args.data = args.data.resolve()
    return args


def main() -> None:
    args = parse_args()
    plan = sizes(args.cpu_smoke)
    if args.child:
        print(json.dumps(child(args, plan, args.child)))
        return
    if not args.data.is_dir():
        sys.exit(f"error: --data: {args.data} is not a folder (copy the trainval data there)")
    started = time.perf_counter()
    keep = tempfile.TemporaryDirectory(prefix="gpu_proof.")
    args.work = Path(keep.name)
    smoke_results = Path(os.environ.get("OUT") or args.work / "results")
    results = args.results or (smoke_results if args.cpu_smoke else REPO / "benchmarks/results")
    results.mkdir(parents=True, exist_ok=True)
    report = {"cpu_smoke": args.cpu_smoke, "plan": plan, "started": time.strftime("%F %T")}

    def save() -> None:
        report["elapsed_s"] = round(time.perf_counter() - started, 1)
        text = json.dumps(report, indent=1) + "\n"
        for folder in {results, Path(os.environ.get("OUT") or results)}:
            (folder / "gpu_proof.json").write_text(text)

    def record(step: str, value: dict) -> None:
        report[step] = value
        save()
        print(
            f"=== {step} at {time.perf_counter() - started:.0f} s: {json.dumps(value)[:400]}",
            flush=True,
        )

    limits = plan["limits"]
    env = environment(plan)
    record("environment", env)
    peak = None if env["dense_bf16_peak_tflops"] is None else env["dense_bf16_peak_tflops"] * 1e12
    checks = None
    if "trainer_checks" in args.steps:  # small; beside prepare, done before anything is timed
        command, check_env = trainer_checks_command(args, plan)
        log = (args.work / "trainer_checks.log").open("w")
        checks = subprocess.Popen(command, env=check_env, stdout=log, stderr=subprocess.STDOUT)
    if "prepare" in args.steps or set(args.steps) - {"environment", "trainer_checks"}:
        record("prepare", prepare(args, plan))
    if checks is not None:
        try:
            rc = checks.wait(timeout=limits["trainer_checks"])
            check_report = json.loads((args.work / "trainer_gpu_check.json").read_text())
            record("trainer_checks", {"rc": rc} | trainer_verdict(check_report))
        except (subprocess.TimeoutExpired, FileNotFoundError) as err:
            checks.kill()
            record("trainer_checks", {"error": f"{type(err).__name__}: {err}"})
    for arm in ("runner", "original", "original_equal"):
        if arm in args.steps:
            record(arm, with_mfu(in_child(args, arm, limits["arm"]), peak))
    if {"runner", "original_equal"} <= report.keys() and "img_per_s" in report["runner"]:
        report["runner_vs_original"] = report["runner"]["img_per_s"] / report["original"].get(
            "img_per_s", float("nan")
        )
        report["runner_vs_original_equal"] = report["runner"]["img_per_s"] / report[
            "original_equal"
        ].get("img_per_s", float("nan"))
    if "time_to_accuracy" in args.steps:
        record("time_to_accuracy", in_child(args, "time_to_accuracy", limits["time_to_accuracy"]))
    if "evaluate" in args.steps:
        record("evaluate", in_child(args, "evaluate", limits["evaluate"]))
    if "compile" in args.steps:
        left = args.budget - (time.perf_counter() - started)
        if args.cpu_smoke or left >= 2 * limits["arm"]:
            record("compile", with_mfu(in_child(args, "compile", left), peak))
        else:
            record(
                "compile",
                {
                    "skipped": f"{left:.0f} s left of the {args.budget:.0f} s budget; "
                    "rerun with --steps compile"
                },
            )
    failed = [
        step for step in STEPS if isinstance(report.get(step), dict) and "error" in report[step]
    ]
    report["failed_steps"] = failed
    save()
    print(
        f"=== done in {time.perf_counter() - started:.0f} s; failed: {failed or 'none'}; "
        f"{results / 'gpu_proof.json'}"
    )
    keep.cleanup()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
