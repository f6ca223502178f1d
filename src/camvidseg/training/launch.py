"""Start distributed training: torchrun on this machine, or one torchrun per SLURM node via srun.

One node, ``--gpus G > 1``: ``torchrun --standalone --nproc_per_node G`` (gloo on the CPU).
``--nodes N > 1`` (inside a SLURM job of N tasks, one per node): this process runs
``srun --ntasks N`` once; each task starts its own torchrun agent with ``--nnodes N
--nproc_per_node G`` and a c10d rendezvous on the first host of the job's node list, hosted by
the task with ``SLURM_PROCID`` 0. These launchers ignore SIGUSR1 (SLURM's warning before the time
limit, sent to every process of the job step), so that only the training processes act on it:
they save a checkpoint at the current iteration and exit, and the retried job resumes from it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ..core.errors import UserError

NODE_TASK = "CAMVIDSEG_NODE_TASK"  # set in the srun tasks: start torchrun, not srun again
RENDEZVOUS_PORTS = (29400, 1000)  # first port, count: the job id picks one (jobs may share a host)


def needed(gpus: int, nodes: int) -> bool:
    """Whether this process must start the training processes instead of being one."""
    return (gpus > 1 or nodes > 1) and "LOCAL_RANK" not in os.environ


def run(module: str, argv: list[str], gpus: int, nodes: int, device: str, threads: int) -> None:
    """Run ``python -m module argv`` as gpus x nodes DDP processes; returns when they end."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # inherited by srun, torchrun and the workers
    if nodes > 1 and NODE_TASK not in os.environ:
        command = node_tasks_command(module, argv, nodes, threads)
        env = {**os.environ, NODE_TASK: "1"}
    else:
        from ..core.device import require_gpus  # torch: only once processes are really started

        require_gpus(gpus, device, "train.gpus")
        command = torchrun_command(module, argv, gpus, nodes)
        env = None
    print("launching:", " ".join(command), flush=True)
    code = subprocess.run(command, check=False, env=env).returncode
    if code:
        raise UserError(f"distributed training failed ({command[0]} exit {code})")


def node_tasks_command(module: str, argv: list[str], nodes: int, threads: int) -> list[str]:
    """srun: one task per node of this SLURM job, each running this module again."""
    if "SLURM_JOB_ID" not in os.environ:
        raise UserError(
            f"train.nodes: {nodes} needs a SLURM job of {nodes} nodes"
            " (run the workflow with --profile profiles/slurm)"
        )
    return ["srun", f"--ntasks={nodes}", f"--cpus-per-task={threads}", "--kill-on-bad-exit=1",
            sys.executable, "-m", module, *argv]  # fmt: skip


def torchrun_command(module: str, argv: list[str], gpus: int, nodes: int) -> list[str]:
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}"]
    if nodes == 1:
        command.append("--standalone")
    else:
        node_rank = int(os.environ["SLURM_PROCID"])
        job = int(os.environ["SLURM_JOB_ID"])
        port = RENDEZVOUS_PORTS[0] + job % RENDEZVOUS_PORTS[1]
        host = os.environ.get("SLURMD_NODENAME", "?")
        print(f"node {node_rank} of {nodes} on {host} (SLURM_PROCID), job {job}", flush=True)
        command += [
            f"--nnodes={nodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={first_node_address()}:{port}",
            f"--rdzv-id={job}",
            f"--rdzv-conf=is_host={int(node_rank == 0)}",  # the first task hosts the store
            "--max-restarts=0",
        ]
    return [*command, "-m", module, *argv]


def first_node_address() -> str:
    """Address of the first host in SLURM_JOB_NODELIST (its NodeAddr: names need not resolve)."""
    nodelist = os.environ["SLURM_JOB_NODELIST"]
    first = scontrol("show", "hostnames", nodelist).split()[0]
    for field in scontrol("show", "node", "--oneliner", first).split():
        if field.startswith("NodeAddr="):
            return field.removeprefix("NodeAddr=")
    return first


def scontrol(*args: str) -> str:
    result = subprocess.run(["scontrol", *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise UserError(f"scontrol {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout
