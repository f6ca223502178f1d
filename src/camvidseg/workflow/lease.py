"""Run a command on GPUs leased to it alone: ``camvidseg lease --gpus N -- COMMAND ...``.

Snakemake's ``--resources gpu=N`` bounds how many GPUs the running jobs ask for, not which ones:
without this every job would land on GPU 0. The lease takes an exclusive lock (``flock``) on one
file per device id under ``.snakemake/gpu-leases/`` (or ``$CAMVIDSEG_GPU_LEASES``), on N ids no
other job holds, sets ``CUDA_VISIBLE_DEVICES`` to them and replaces itself with COMMAND (exec):
the locks live exactly as long as COMMAND's process and the kernel drops them when it ends,
however it ends (kill -9 included). Inside a SLURM job the scheduler has already chosen the
devices, and with ``--gpus 0`` there is nothing to choose: COMMAND then runs untouched.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from ..core import command as cli_command
from ..core.errors import UserError, cli

LEASE_DIR = Path(".snakemake") / "gpu-leases"
POLL_SECONDS = 0.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli_command.parser(__file__, __doc__)
    p.add_argument("--gpus", type=int, required=True, help="device ids to lease (0: none)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = p.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        p.error("no command given after --")
    return args


def visible_devices() -> tuple[list[str], str]:
    """Device ids this machine offers the job, and where that came from."""
    restricted = os.environ.get("CUDA_VISIBLE_DEVICES")
    if restricted is not None:
        ids = [d.strip() for d in restricted.split(",") if d.strip()]
        return ids, f"CUDA_VISIBLE_DEVICES={restricted}"
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return [], "no nvidia-smi"
    if listing.returncode:
        return [], f"nvidia-smi failed: {listing.stderr.strip() or listing.stdout.strip()}"
    return listing.stdout.split(), "nvidia-smi"


def try_lease(devices: list[str], count: int, folder: Path) -> list[tuple[str, int]]:
    """Locks on ``count`` free devices (all or none): [(id, fd)], or [] when too few are free.

    Every job tries the ids in the same order and lets go of partial leases, so none waits while
    holding a device another one needs.
    """
    held: list[tuple[str, int]] = []
    for device in devices:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
        fd = os.open(folder / f"gpu-{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((device, fd))
        if len(held) == count:
            return held
    for _, fd in held:
        os.close(fd)
    return []


def lease(count: int) -> list[tuple[str, int]]:
    """Wait until ``count`` devices are free and lock them."""
    devices, source = visible_devices()
    if count > len(devices):
        raise UserError(f"{count} GPU(s) asked for, but {len(devices)} visible ({source})")
    folder = Path(os.environ.get("CAMVIDSEG_GPU_LEASES", LEASE_DIR))
    folder.mkdir(parents=True, exist_ok=True)
    waiting = False
    while not (held := try_lease(devices, count, folder)):
        if not waiting:
            print(f"lease: waiting for {count} free GPU(s) of {devices}", file=sys.stderr)
            waiting = True
        time.sleep(POLL_SECONDS)
    return held


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.gpus > 0 and "SLURM_JOB_ID" not in os.environ:
        held = lease(args.gpus)
        for _, fd in held:
            os.set_inheritable(fd, True)  # kept across exec: the command holds the lease
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # same pid after exec: who holds it
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(device for device, _ in held)
        print(f"lease: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}", file=sys.stderr)
    sys.stdout.flush()
    try:
        os.execvp(args.command[0], args.command)
    except FileNotFoundError:
        raise UserError(f"{args.command[0]}: command not found") from None


if __name__ == "__main__":
    main()
