"""A real SLURM cluster (munge, slurmctld, slurmd from Debian) on this one machine, for the tests.

``Cluster(nodes=2)`` runs two slurmd daemons (``slurmd -N node1``, ``-N node2``, own port, spool
and address 127.0.0.1 / 127.0.0.2): two real SLURM nodes, so a 2-node job really gets two
nodes, one task on each, from two slurmd. Every daemon is started here in the foreground and
stopped by its PID; state, spool, logs and the munge key live in a private folder. The SLURM
executor's job step strips SLURM_CONF, so slurm.conf must sit at /etc/slurm/slurm.conf: whatever
was there is put back on stop. Both that file and the daemons' ports are the machine's: a cluster
started while another runs (a second test session, the benchmark) waits for it to stop.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client"]
ETC = Path("/etc/slurm")
LOCK = Path(tempfile.gettempdir()) / "camvidseg-slurm-test-cluster.lock"


def read_or_empty(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def install() -> str | None:
    """Install the daemons with apt when missing; returns why it could not, or None."""
    if all(shutil.which(t) for t in ("munged", "slurmctld", "slurmd", "sbatch")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "SLURM daemons are missing and apt-get (as root) is not available to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if result.returncode:
        return f"apt-get install {' '.join(PACKAGES)} failed: {result.stderr.strip()[-300:]}"
    return None


class Cluster:
    """``nodes`` slurmd daemons, each with ``gpus`` fake GPUs, all CPUs and 4 GB a CPU."""

    def __init__(self, gpus: int = 1, nodes: int = 1):
        self.gpus = gpus
        self.nodes = [f"node{i + 1}" for i in range(nodes)]
        self.dir = Path(tempfile.mkdtemp(prefix="slurm-test-"))
        self.dir.chmod(0o755)  # munged wants the socket's folders world-executable
        self.processes: list[subprocess.Popen] = []
        self.saved_etc: Path | None = None
        self.host = socket.gethostname().split(".")[0]
        self.lock = None
        self.saved_conf_env: str | None = None

    def write_config(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "log", "munge-key"):
            (d / sub).mkdir()
        (d / "munge-key").chmod(0o700)
        key = d / "munge-key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (d / "munge-run").mkdir(mode=0o755)
        cpus = os.cpu_count() or 2
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        nodes = "\n".join(
            f"NodeName={name} NodeHostname={self.host} NodeAddr=127.0.0.{i + 1} Port={17001 + i}"
            f" CPUs={cpus} RealMemory={4000 * cpus}{gres} State=UNKNOWN"
            for i, name in enumerate(self.nodes)
        )
        conf = f"""
ClusterName=camvidtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge-run/munge.socket
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MailProg=/bin/true
ReturnToService=2
MinJobAge=3600
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
GresTypes=gpu
{nodes}
PartitionName=debug Nodes={",".join(self.nodes)} Default=YES MaxTime=60 State=UP
"""
        if ETC.exists():
            self.saved_etc = Path(tempfile.mkdtemp(prefix="etc-slurm-")) / "slurm"
            shutil.copytree(ETC, self.saved_etc, symlinks=True)
            if "ClusterName=camvidtest" in read_or_empty(self.saved_etc / "slurm.conf"):
                for name in ("slurm.conf", "gres.conf"):  # left by a killed test run: not theirs
                    (self.saved_etc / name).unlink(missing_ok=True)
        ETC.mkdir(parents=True, exist_ok=True)
        (ETC / "slurm.conf").write_text(conf)
        (ETC / "gres.conf").write_text(self.fake_gpus())

    def fake_gpus(self) -> str:
        """gres.conf lines: one GPU can be /dev/null; several need a character device each."""
        if not self.gpus:
            return ""
        lines = ["AutoDetect=off"]
        for name in self.nodes:
            if self.gpus == 1:
                lines.append(f"NodeName={name} Name=gpu File=/dev/null")
                continue
            for i in range(self.gpus):
                device = self.dir / f"fake-gpu-{name}-{i}"
                os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
                lines.append(f"NodeName={name} Name=gpu File={device}")
        return "\n".join(lines) + "\n"

    def start(self) -> Cluster:
        self.lock = LOCK.open("a")
        fcntl.flock(self.lock, fcntl.LOCK_EX)  # released by stop(), or by the kernel on exit
        self.write_config()
        self.saved_conf_env = os.environ.get("SLURM_CONF")  # tests/conftest.py empties it
        os.environ["SLURM_CONF"] = str(ETC / "slurm.conf")  # daemons, clients, Snakemake
        d = self.dir
        self._spawn(
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={d}/munge-run/munge.socket",
                f"--key-file={d}/munge-key/munge.key",
                f"--pid-file={d}/munged.pid",
                f"--log-file={d}/log/munged.log",
                f"--seed-file={d}/munged.seed",
            ]
        )
        self._wait_for(lambda: (d / "munge-run/munge.socket").exists(), "munged")
        self._spawn(["slurmctld", "-D", "-i"])
        self._wait_for(
            lambda: (
                self.run("scontrol", "ping").returncode == 0
                and "UP" in self.run("scontrol", "ping").stdout
            ),
            "slurmctld",
        )
        for name in self.nodes:
            (d / "spool" / name).mkdir()
            self._spawn(["slurmd", "-D", "-N", name], log=f"slurmd-{name}")
        self._wait_for(self._all_nodes_idle, "slurmd")
        return self

    def _all_nodes_idle(self) -> bool:
        states = self.run("sinfo", "-h", "-N", "-o", "%N %T").stdout.split()
        return states.count("idle") == len(self.nodes)

    def _spawn(self, command: list[str], log: str | None = None) -> None:
        log = (self.dir / "log" / f"{log or command[0]}.out").open("w")
        self.processes.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def _wait_for(self, ready, what: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while not ready():
            if time.time() > deadline or any(p.poll() is not None for p in self.processes):
                logs = "\n".join(p.read_text()[-800:] for p in (self.dir / "log").glob("*"))
                self.stop()
                raise RuntimeError(f"{what} did not come up:\n{logs}")
            time.sleep(0.1)

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)

    def cancel_jobs(self, timeout: float = 60) -> None:
        """Cancel every job and wait until slurmd has ended their processes."""
        self.run("scancel", "--full", "-u", "root")
        deadline = time.time() + timeout
        active = ("squeue", "-h", "-t", "RUNNING,COMPLETING,SUSPENDED", "-o", "%i")
        while time.time() < deadline and self.run(*active).stdout.strip():
            time.sleep(0.5)

    def jobs(self) -> list[tuple[str, str, str]]:
        """(job id, name, state) of every job slurmctld still remembers (MinJobAge)."""
        out = self.run("squeue", "-h", "-t", "all", "-o", "%i|%j|%T").stdout
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def stop(self) -> None:
        self.cancel_jobs()  # slurmstepd outlives slurmd otherwise
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
        for name in ("slurm.conf", "gres.conf"):
            (ETC / name).unlink(missing_ok=True)
        if self.saved_conf_env is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self.saved_conf_env
        if self.saved_etc is not None:
            shutil.copytree(self.saved_etc, ETC, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(self.saved_etc.parent, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.lock is not None:
            self.lock.close()  # the next cluster may start
            self.lock = None
