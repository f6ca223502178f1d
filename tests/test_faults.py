"""Fault injection: SIGKILL at seeded random points of every stage, rerun, same results.

One uninterrupted run of the tiny workflow (dataset obtained by URL from a throttled server on
127.0.0.1) is the reference; it also measures how long each stage's job lives. Then, in a second
project, each stage in turn is run (``--until`` its rule) and SIGKILLed at a seeded random moment
of its job's life: either the job's processes only (what an OOM kill or a preempted job does) or
the whole Snakemake session (a lost terminal or node). Snakemake is then rerun as the README says
(``--unlock`` first when it asks for it) until the stage is done. At the end the two projects
must hold the same files (no temporary debris, nothing missing), the same bytes for the data,
metrics and pictures, the same model tensors, and no process of the killed runs may be left.

Reproduce a failure with the seed it prints: ``CAMVIDSEG_FAULT_SEED=<seed>``; more kill points
per stage with ``CAMVIDSEG_FAULT_KILLS=<n>``.
"""

import contextlib
import hashlib
import http.server
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY, snakemake, snakemake_call

SEED = int(os.environ.get("CAMVIDSEG_FAULT_SEED", "20261127"))
KILLS_PER_STAGE = int(os.environ.get("CAMVIDSEG_FAULT_KILLS", "1"))
# (rule, module its job runs): the stages of the issue, in workflow order.
STAGES = [
    ("obtain_dataset", "obtain"),
    ("extract", "extract"),
    ("convert_masks", "convert"),
    ("train", "train"),
    ("evaluate", "evaluate"),
    ("visualize", "visualize"),
]
# What the six stages make (not plots, export, provenance: they hold times and are not stages
# of the list); both projects build exactly these.
TARGETS = ("results/metrics/val.json", "results/metrics/test.json", "results/vis_data")
BYTE_IDENTICAL = ("resources", "results/data", "results/metrics", "results/vis_data")
# Logs, benchmark records and the model file (torch.save writes a fresh serialization id each
# time; its tensors are compared instead) hold times or ids; MMEngine names its run folders in
# train_work by time.
NOT_COMPARED = ("results/logs", "results/benchmarks", "results/train_work")
RECORDS = ".made.json"  # what made each output (madeby): holds times, so not compared either
DEBRIS_SIGNS = (".part", ".tmp")  # besides names starting with "." (the atomic writers' temps)


class Throttled(http.server.BaseHTTPRequestHandler):
    """Serves one archive with Range support, slowly, so a kill can land mid-download."""

    payload = b""

    def do_GET(self):
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            total = len(self.payload)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"sample-1"')
        self.end_headers()
        with contextlib.suppress(ConnectionError):  # the client was killed mid-transfer
            for offset in range(0, len(body), 2048):
                self.wfile.write(body[offset : offset + 2048])
                self.wfile.flush()
                time.sleep(0.03)

    def log_message(self, *args):
        pass


@pytest.fixture
def archive_url(sample_archive):
    Throttled.payload = sample_archive.read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Throttled)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/CamVid.tar.gz?token=t0"
    httpd.shutdown()
    httpd.server_close()


def processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (session id, state, command line) of every process on the machine."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # ended meanwhile
        found[int(entry)] = (int(fields[3]), fields[0], command)
    return found


def session_members(session: int) -> dict[int, str]:
    """Live (not zombie) processes of a session: Snakemake and every job it started."""
    return {
        pid: command
        for pid, (sid, state, command) in processes().items()
        if sid == session and state != "Z"
    }


def stage_running(session: int, module: str) -> bool:
    return any(f"-m camvidseg {module} " in c + " " for c in session_members(session).values())


def kill(session: int, whole_session: bool) -> None:
    """SIGKILL the session's jobs (all but Snakemake), or Snakemake and its jobs."""
    for _ in range(50):  # a dying shell may still start a child: repeat until none is left
        targets = [p for p in session_members(session) if whole_session or p != session]
        if not targets:
            return
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    raise AssertionError(f"processes of session {session} survive SIGKILL")


def start(workdir: Path, config: Path, *args) -> subprocess.Popen:
    command, env = snakemake_call(workdir, *args, configfile=config)
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def measured_run(workdir: Path, config: Path) -> dict[str, float]:
    """The uninterrupted reference run; returns how long each stage's job(s) lived (s)."""
    job = start(workdir, config, *TARGETS)
    first, last = {}, {}
    while job.poll() is None:
        now = time.monotonic()
        for _, module in STAGES:
            if stage_running(job.pid, module):
                first.setdefault(module, now)
                last[module] = now
        time.sleep(0.01)
    assert job.returncode == 0, "the reference run failed"
    return {module: last[module] - first[module] for module in first}


def killed_run(workdir: Path, config: Path, rule: str, module: str, delay: float,
               whole_session: bool, force: bool) -> float | None:  # fmt: skip
    """Run up to ``rule``; SIGKILL ``delay`` s after its job starts. None when the kill landed,
    else how long the job lived (it ended first)."""
    job = start(workdir, config, "--until", rule, *(["--forcerun", rule] if force else []))
    started = None
    while job.poll() is None:
        if stage_running(job.pid, module):
            started = started or time.monotonic()
            if time.monotonic() - started >= delay:
                kill(job.pid, whole_session)
                job.wait()
                assert session_members(job.pid) == {}, "a killed job left processes behind"
                return None
        elif started is not None:
            break  # the job ended before the kill point
        time.sleep(0.005)
    lived = time.monotonic() - started if started is not None else 0.0
    job.wait()
    return lived


def recover(workdir: Path, config: Path, *args) -> bool:
    """Rerun as the README says; returns whether Snakemake asked for ``--unlock``."""
    result = snakemake(workdir, *args, configfile=config, check=False)
    unlocked = result.returncode != 0 and "--unlock" in result.stdout + result.stderr
    if unlocked:
        snakemake(workdir, "--unlock", configfile=config)
        result = snakemake(workdir, *args, configfile=config, check=False)
    assert result.returncode == 0, f"rerun after a kill failed:\n{result.stdout}\n{result.stderr}"
    return unlocked


def files(workdir: Path) -> dict[str, Path]:
    found = {}
    for top in ("resources", "results"):
        for path in (workdir / top).rglob("*"):
            name = path.relative_to(workdir).as_posix()
            if path.is_file() and not name.startswith(NOT_COMPARED) and RECORDS not in name:
                found[name] = path
    return found


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_results(reference: Path, faulted: Path) -> None:
    expected, got = files(reference), files(faulted)
    assert sorted(got) == sorted(expected), "debris or missing files after the kills"
    debris = [
        path
        for top in ("resources", "results")
        for path in (faulted / top).rglob("*")
        if (path.name.startswith(".") and not path.name.endswith((".snakemake_timestamp", RECORDS)))
        or path.name.endswith(DEBRIS_SIGNS)
    ]
    assert debris == [], "temporary debris left"
    for name, path in expected.items():
        if name.startswith(BYTE_IDENTICAL):
            assert digest(got[name]) == digest(path), f"{name} differs"
    import torch

    model = [
        torch.load(project / "results/model/best.pth", weights_only=True)
        for project in (reference, faulted)
    ]
    assert model[0]["meta"] == model[1]["meta"]
    assert model[0]["state_dict"].keys() == model[1]["state_dict"].keys()
    for key, tensor in model[0]["state_dict"].items():
        assert torch.equal(tensor, model[1]["state_dict"][key]), f"best.pth: {key} differs"


@pytest.mark.slow
def test_sigkill_at_random_points_of_every_stage_changes_no_result(tmp_path, archive_url):
    data = Throttled.payload
    config = yaml.safe_load(TINY.read_text())
    config["dataset"] = {"source": "url", "url": archive_url,
                         "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))

    t0 = time.monotonic()
    durations = measured_run(tmp_path / "reference", config_file)
    print(f"reference run {time.monotonic() - t0:.0f} s; jobs lived {durations}")
    assert set(durations) == {module for _, module in STAGES}, durations
    rng = random.Random(SEED)
    faulted = tmp_path / "faulted"
    survived, log = 0, []
    for rule, module in STAGES:
        landed, lifetime = 0, durations[module]
        for attempt in range(2 * KILLS_PER_STAGE + 2):  # a draw past the job's end lands nowhere
            if landed == KILLS_PER_STAGE:
                break
            # Seeded fractions of the job's life; the life is the one last seen (load varies).
            delay, whole = rng.random() * lifetime, rng.random() < 0.5
            lived = killed_run(faulted, config_file, rule, module, delay, whole, force=attempt > 0)
            unlocked = recover(faulted, config_file, "--until", rule)
            landed += lived is None
            lifetime = lived or lifetime
            what = "session" if whole else "job"
            outcome = ("killed" if lived is None else "missed") + (", --unlock" if unlocked else "")
            log.append(f"{rule} +{delay:.2f}s {what}: {outcome} ({time.monotonic() - t0:.0f} s)")
        assert landed == KILLS_PER_STAGE, f"seed {SEED}: kills did not land in {rule}: {log}"
        survived += landed
    snakemake(faulted, *TARGETS, configfile=config_file)
    print(f"seed {SEED}: {survived} kill points survived:", *log, sep="\n  ")
    assert_same_results(tmp_path / "reference", faulted)
    # The signed URL's token is in no file either project wrote (logs, records, metadata).
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and b"token=t0" in p.read_bytes()]
    assert leaks == [config_file]
