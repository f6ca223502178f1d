"""What made a stage's outputs, written by the stage beside each of them: ``.<name>.made.json``.

Every stage run by a rule calls this one helper: ``made = Record(__file__, args, inputs, outputs)``
before its work (the code and inputs as it read them; an output that would replace an input is
refused there), ``made.write()`` after it. The record names the stage, its settings (the parsed
command line), the content identity of every input and output (``identity``), its code file by
file (``codegraph.closure``), the interpreter, the versions of the packages pinned in
requirements.txt, the git commit and the times. ``provenance`` gathers these
records; nothing reads Snakemake's own files. No secret is written: every URL in the settings goes
through ``identity.redact_url``. A failed stage writes nothing (its old record, if any, then names
outputs that are gone or changed: stale).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

from ..core.errors import UserError
from ..core.fileio import write_json
from ..data.identity import HashCache, content_id, redact_url
from . import codegraph

SUFFIX = ".made.json"
# The project's own pins (the one place they live); each record gives the installed versions.
REQUIREMENTS = codegraph.PACKAGE_DIR.parents[1] / "requirements.txt"


def record_path(output: Path | str) -> Path:
    """Where the record of ``output`` (a file or a folder) lies: beside it, hidden."""
    output = Path(output)
    return output.with_name(f".{output.name}{SUFFIX}")


def read_record(output: Path | str) -> dict | None:
    """The record of ``output``; None where no stage wrote one (source data) or it is torn."""
    try:
        return json.loads(record_path(output).read_text())
    except (OSError, ValueError):
        return None


class Record:
    """One stage run: what it read when it started, what it wrote when ``write`` is called."""

    def __init__(self, module_file: str, args: argparse.Namespace, inputs: list, outputs: list):
        refuse_outputs_over_inputs(inputs, outputs)
        self.outputs = outputs
        self.cache = HashCache.from_env()
        self.stage = Path(module_file).stem
        self.entry = {
            "stage": self.stage,
            "settings": settings_of(args),
            "inputs": identities(inputs, self.cache),
            "code": code_identity(self.stage, self.cache),
            "environment": environment(),
            "started": now(),
        }

    def write(self, outputs: list | None = None) -> None:
        """The record, beside every output (atomically); only the process that wrote them.
        ``outputs``: those given at the start, unless the work found more (plots' pictures)."""
        if os.environ.get("RANK", "0") != "0":  # a DDP worker: rank 0 writes the outputs
            return
        made = identities(self.outputs if outputs is None else outputs, self.cache)
        entry = self.entry | {"outputs": made, "finished": now()}
        for output in made:
            write_json(record_path(output), entry)
        self.cache.save()


def _paths(items: list) -> list[str]:
    """The given paths, lists flattened, unset ones (None, ``none``) left out."""
    found = []
    for item in items:
        if isinstance(item, list | tuple):
            found += _paths(list(item))
        elif item not in (None, "", "none"):
            found.append(str(item))
    return found


def refuse_outputs_over_inputs(inputs: list, outputs: list) -> None:
    """Refuse one path given for two outputs, or an output that would replace an input (the
    same path, or a folder holding it): a stage run by hand would lose the user's file."""
    given: dict[str, str] = {}
    for output in _paths(outputs):
        real = os.path.realpath(output)
        if real in given:
            raise UserError(f"{output}: given for two outputs; give each its own path")
        given[real] = output
    for item in _paths(inputs):
        real = os.path.realpath(item)
        for output_real, output in given.items():
            if real == output_real or real.startswith(output_real + os.sep):
                raise UserError(
                    f"{output}: an output of this stage would replace its input {item}; choose "
                    "another output path"
                )


def identities(items: list, cache: HashCache) -> dict[str, str | None]:
    """Path -> content identity (None where nothing exists at that path)."""
    return {p: content_id(p, cache) if os.path.exists(p) else None for p in _paths(items)}


def settings_of(args: argparse.Namespace) -> dict:
    """The parsed command line as JSON values; any URL without its query and credentials."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, str) and "://" in value:
            return redact_url(value)
        return value if isinstance(value, bool | int | float | str | None) else str(value)

    return plain(vars(args))


def code_identity(stage: str, cache: HashCache) -> dict:
    """Content identity per module of the stage's code, and one hash over them all."""
    files = {
        m: content_id(codegraph.path_of(m), cache) for m in codegraph.closure(stage)
    }
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"files": files, "hash": f"sha256:{digest}"}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def pinned_packages() -> list[str]:
    """Distribution names pinned in requirements.txt (none where the package runs installed)."""
    lines = REQUIREMENTS.read_text().splitlines() if REQUIREMENTS.is_file() else []
    return [line.split("==")[0].strip() for line in lines if "==" in line.split("#")[0]]


def environment() -> dict:
    """Interpreter, installed versions of the pinned packages and git state, as they are now."""
    packages = {}
    for name in pinned_packages():
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {"python": platform.python_version(), "packages": packages, "git": git_state()}


def git_state() -> dict | None:
    root = codegraph.PACKAGE_DIR.parents[1]

    def git(*args: str) -> str:
        run = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        if run.returncode:
            raise OSError(run.stderr.strip())
        return run.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except OSError:
        return None  # not a git checkout (an unpacked release), or no git
