"""The trainer's checks on one GPU (about 4 minutes on an H100/H200): the device policy and AMP
dtype, one precision for training's validation and the evaluate stage, repeatability of two
identical runs (default and ``train.deterministic``), and resume after SIGUSR1 mid-epoch.

Run from the repository root: ``python benchmarks/trainer_gpu_check.py``; it writes
``benchmarks/results/trainer_gpu_check.json`` (and the logs of two runs to ``$OUT`` if set).
``CHECK_DEVICE=cpu CHECK_SIZE=48,64`` runs the same checks on the CPU.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("OUT", "/tmp/trainer_gpu_check/out"))
RESULT = REPO / "benchmarks/results/trainer_gpu_check.json"
DEVICE = os.environ.get("CHECK_DEVICE", "cuda")
SIZE = [int(x) for x in os.environ.get("CHECK_SIZE", "240,320").split(",")]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]
ENV = {
    **os.environ,
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
}
report = {"started": time.strftime("%H:%M:%S")}


def save():
    OUT.mkdir(parents=True, exist_ok=True)
    for path in (OUT / RESULT.name, RESULT):
        path.write_text(json.dumps(report, indent=1) + "\n")


import torch  # noqa: E402

from camvidseg.core import device  # noqa: E402
from camvidseg.core.fileio import write_json  # noqa: E402

report["torch"] = [torch.__version__, torch.version.cuda]
if DEVICE == "cuda":
    report["gpu"] = torch.cuda.get_device_name(0)
    report["bf16_hardware"] = torch.cuda.is_bf16_supported(including_emulation=False)
    report["bf16_with_emulation"] = torch.cuda.is_bf16_supported()
report["resolve_auto"] = device.resolve("auto", "train.device") if DEVICE == "cuda" else "cpu"
report["precision_amp"] = device.precision(DEVICE, True)
save()

from camvid_like import prepared_set  # noqa: E402

WORK = Path("/tmp/trainer_gpu_check")
(WORK / "extracted").mkdir(parents=True, exist_ok=True)  # extract_archive wants it to exist
_, palette, PREPARED, _ = prepared_set(WORK, {"train": 16, "val": 4, "test": 2}, *SIZE)
PALETTE = WORK / "palette.json"
write_json(PALETTE, palette)


def settings(**train):
    base = {"device": DEVICE, "epochs": 3, "batch_size": 4, "crop_size": [SIZE[0] * 3 // 4,
            SIZE[1] * 3 // 4], "warmup_iters": 2, "log_interval": 1, "lr": 0.001}  # fmt: skip
    return json.dumps({"model": {"name": "deeplabv3_resnet50", "backbone_weights": "none"},
                       "train": base | train})  # fmt: skip


def train(name, stop_at=None, **over):
    work = WORK / name
    command = [sys.executable, "-m", "camvidseg", "train", "--settings", settings(**over),
               "--prepared", str(PREPARED), "--palette", str(PALETTE),
               "--out-model", str(work / "best.pth"), "--out-history", str(work / "h.json"),
               "--work-root", str(work / "ckpt"),
               "--threads", "8", "--num-workers", "2"]  # fmt: skip
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=ENV)  # fmt: skip
    lines = []
    for line in process.stdout:
        lines.append(line)
        if stop_at and stop_at in line:
            process.send_signal(signal.SIGUSR1)
    rc = process.wait()
    if name in ("a", "f"):
        (OUT / f"{name}.log").write_text("".join(lines)[-20000:])
    keep = [x.strip() for x in lines if any(k in x for k in ("device:", "resuming", "stopped by",
            "warning", "Error", "error:", "Traceback"))]  # fmt: skip
    report[f"run_{name}"] = {"rc": rc, "seconds": round(time.time() - start, 1), "lines": keep[:12]}
    save()
    return work


def compare(first, second):
    a = torch.load(first / "best.pth", weights_only=True)
    b = torch.load(second / "best.pth", weights_only=True)
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    worst = max((float((a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max())
                 for k in differ), default=0.0)  # fmt: skip
    ha = json.loads((first / "h.json").read_text())
    hb = json.loads((second / "h.json").read_text())
    return {"tensors": len(a["state_dict"]), "differing": len(differ), "max_abs_diff": worst,
            "first_differing": differ[:3], "history_equal": ha == hb,
            "val_mIoU": [[r["mIoU"] for r in ha["val"]], [r["mIoU"] for r in hb["val"]]],
            "best": [a["meta"]["source"], b["meta"]["source"]]}  # fmt: skip


OUT.mkdir(parents=True, exist_ok=True)
a = train("a")
b = train("b")
report["default_repeat"] = compare(a, b)
save()
c = train("c", deterministic=True)
d = train("d", deterministic=True)
report["deterministic_repeat"] = compare(c, d)
save()
train("f", stop_at="Epoch(train) [2][2/4]", deterministic=True)  # SIGUSR1 mid-epoch 2
report["run_f_stopped"] = report.pop("run_f")
f = train("f", deterministic=True)  # resumes in the same work dir
report["signal_resume_vs_uninterrupted_deterministic"] = compare(c, f)
save()
for name, work in (("a", a), ("c", c)):
    out = work / "val.json"
    subprocess.run([sys.executable, "-m", "camvidseg", "evaluate",
                    "--model", str(work / "best.pth"),
                    "--prepared", str(PREPARED), "--palette", str(PALETTE), "--split", "val",
                    "--device", DEVICE, "--out-json", str(out), "--out-csv", str(work / "v.csv")],
                   env=ENV, check=True, capture_output=True)  # fmt: skip
    metrics = json.loads(out.read_text())
    meta = torch.load(work / "best.pth", weights_only=True)["meta"]
    history = json.loads((work / "h.json").read_text())
    logged = next(r for r in history["val"] if r["epoch"] == meta["epoch"])
    report[f"evaluate_vs_validation_{name}"] = {"evaluate_mIoU": metrics["mIoU"],
        "validation_mIoU": logged["mIoU"], "precision": metrics["precision"],
        "meta_precision": meta.get("precision")}  # fmt: skip
    save()
events = sorted(str(p.relative_to(WORK)) for p in WORK.glob("a/ckpt/*/tensorboard/*"))
report["tensorboard_files"] = events
report["finished"] = time.strftime("%H:%M:%S")
save()
print(json.dumps(report, indent=1))
