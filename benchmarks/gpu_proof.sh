#!/usr/bin/env bash
# The GPU proof, version 2 (issue 20): one command from the repository root, on one H100/H200, in
# <= 8 minutes with the wheel install. What it runs and writes: benchmarks/gpu_proof.py (its
# docstring); the figures go to benchmarks/results/gpu_proof.json (and $OUT where that is set).
#
# Two git-ignored inputs travel with the checkout (about 53 MiB together, under the 64 MiB a device
# transfer takes):
#   .whl/                              make gpu-wheels: the mmengine-lite and snakemake closure from
#                                      this venv, less what the GPU image has, as cp312 manylinux
#                                      wheels (26 MB; that machine has no network)
#   .gpu_data/camvid-segnet-trainval/  make gpu-data: the SegNet train (367) and val (101) copy (26 MB)
# With the device tool: run(command="bash benchmarks/gpu_proof.sh", carry=[".whl", ".gpu_data"]).
#
#   bash benchmarks/gpu_proof.sh              on the GPU machine
#   bash benchmarks/gpu_proof.sh --cpu-smoke  here: every step tiny on the CPU, the same JSON shape
#                                             (to $OUT or a temporary folder, never into results/)
# Further arguments go to gpu_proof.py, e.g. --steps compile to run one step again.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[ "${1:-}" = "--cpu-smoke" ] && SMOKE=1
if [ -d .whl ] && [ "$SMOKE" = 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "error: installing .whl/ failed" >&2; exit 2; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "$SMOKE" = 1 ]; then LOG=${OUT:-/tmp}/gpu_proof_smoke.log; else LOG=${OUT:-benchmarks/results}/gpu_proof.log; fi
python3 benchmarks/gpu_proof.py "$@" 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
