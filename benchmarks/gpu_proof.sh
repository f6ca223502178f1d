#!/usr/bin/env bash
# The GPU proof (issue 15): one command, from the repository root, on one H100/H200, in <= 8 min.
# Writes benchmarks/results/gpu_*.json, copied to $OUT where that is set (the log goes there too):
#   gpu_env.json               card, driver, torch/CUDA versions
#   gpu_train_throughput.json  the original example's setup vs this project's training step,
#                              deeplabv3_resnet50 at 720x960, batch 3, bf16 AMP and channels_last
#                              (project), loader workers as the train rule sets them on a GPU (4):
#                              img/s, GPU busy share (first to last kernel), peak memory, both
#   gpu_eval_modes.json        evaluation img/s, whole image vs sliding windows
#   gpu_workflow.json          a 2-epoch run of the real workflow (Snakemake) on the embedded
#                              sample with train.device cuda: wall time, devices the logs report,
#                              val/test mIoU
#
#   bash benchmarks/gpu_proof.sh              on the GPU machine
#   bash benchmarks/gpu_proof.sh --cpu-smoke  here: every step with tiny sizes on the CPU (its JSON
#                                             goes to $OUT or is dropped, never into results/)
#
# The GPU machine has Python 3.12 with torch, torchvision, numpy, opencv, matplotlib, pandas and
# tensorboard but no MMEngine or Snakemake, and no network: their wheels travel in .whl/ (git-ignored;
# about 26 MB), made here beforehand with
#   make gpu-wheels        (= python benchmarks/gpu_wheels.py: the dependency closure of
#                           mmengine-lite and snakemake from this venv, less what that machine has,
#                           as cp312 manylinux wheels via `pip download --no-deps --only-binary`)
# and installed there by this script into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[ "${1:-}" = "--cpu-smoke" ] && SMOKE=1
WORK=$(mktemp -d /tmp/gpu_proof.XXXXXX)
RESULTS=benchmarks/results
[ "$SMOKE" = 1 ] && RESULTS=$WORK/results  # smoke figures are not results
mkdir -p "$RESULTS"
LOG=${OUT:-$RESULTS}/gpu_proof.log
FAILED=()
exec > >(tee "$LOG") 2>&1
START=$SECONDS

step() {  # step NAME SECONDS COMMAND...: run one part; a failure is reported, the rest still runs
    local name=$1 limit=$(($2 * SLOWER))
    shift 2
    echo "=== $name (limit ${limit}s, at $((SECONDS - START))s)"
    if ! timeout "$limit" "$@"; then
        echo "=== $name FAILED"
        FAILED+=("$name")
    fi
}

if [ -d .whl ] && [ "$SMOKE" = 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "error: installing .whl/ failed"; exit 2; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Rules run `python`; make it this python3 (the GPU image may have only the python3 name). A
# wrapper, not a link: a link to a venv's python3 would lose the venv.
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexec %q "$@"\n' "$(command -v python3)" > "$WORK/bin/python"
chmod +x "$WORK/bin/python"
export PATH="$WORK/bin:$PATH"

SLOWER=1  # the time limits below are for the GPU machine; a shared CPU gets 5x as long
if [ "$SMOKE" = 1 ]; then
    SLOWER=5
    TRAIN=(--model lraspp_mobilenet_v3_large --size 48 64 --images 6 --batch 2 --iters 2
           --warmup 1)
    EVAL=(--model lraspp_mobilenet_v3_large --size 400 520 --images 2 --warmup 1)
    DEVICE=cpu
else
    TRAIN=(--model deeplabv3_resnet50 --size 720 960 --images 30 --batch 3 --iters 30 --warmup 5
           --workers 4)
    EVAL=(--model deeplabv3_resnet50 --size 720 960 --images 20 --warmup 3)
    DEVICE=cuda
fi

step environment 30 python3 - "$RESULTS/gpu_env.json" <<'EOF'
import json, subprocess, sys
import torch
env = {"torch": torch.__version__, "cuda": torch.version.cuda,
       "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
if torch.cuda.is_available():
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    env["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True).stdout.strip()
for name in ("mmengine", "snakemake", "torchvision", "numpy", "cv2"):
    env[name] = getattr(__import__(name), "__version__", "?")
print(json.dumps(env, indent=2))
open(sys.argv[1], "w").write(json.dumps(env, indent=2) + "\n")
EOF

step train_throughput 170 python3 benchmarks/train_throughput.py "${TRAIN[@]}" \
    --json "$RESULTS/gpu_train_throughput.json"

step eval_modes 60 python3 benchmarks/eval_modes.py "${EVAL[@]}" \
    --json "$RESULTS/gpu_eval_modes.json"

cat > "$WORK/gpu.yaml" <<EOF
train: {device: $DEVICE, epochs: 2, val_interval: 1, log_interval: 2}
EOF
WORKFLOW_START=$SECONDS
step workflow 200 python3 -m snakemake -s "$PWD/Snakefile" -d "$WORK/run" --cores 8 \
    --resources gpu=1 --configfile config/demo.yaml "$WORK/gpu.yaml"
step workflow_summary 20 python3 - "$WORK/run" "$((SECONDS - WORKFLOW_START))" \
    "$RESULTS/gpu_workflow.json" <<'EOF'
import json, re, sys
from pathlib import Path
run, seconds, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
summary = {"wall_s": seconds, "epochs": 2}
for split in ("val", "test"):
    scores = json.loads((run / f"results/metrics/{split}.json").read_text())
    summary[f"{split}_mIoU"] = scores["mIoU"]
train_log = (run / "results/logs/train.log").read_text()
summary["train_device_line"] = next(
    (line for line in train_log.splitlines() if re.match(r"\s*device:", line)), None)
summary["train_iterations_logged"] = len(re.findall(r"Epoch\(train\)", train_log))
print(json.dumps(summary, indent=2))
Path(out).write_text(json.dumps(summary, indent=2) + "\n")
EOF

echo "=== done in $((SECONDS - START)) s; failed: ${FAILED[*]:-none}"
[ -n "${OUT:-}" ] && cp "$RESULTS"/gpu_*.json "$OUT"/
rm -rf "$WORK"
[ ${#FAILED[@]} -eq 0 ]
