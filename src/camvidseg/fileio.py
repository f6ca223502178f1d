"""Atomic outputs: a stage either leaves a complete output or none at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError


@contextlib.contextmanager
def atomic_path(final: Path | str, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; move it into place only if the block succeeds."""
    final = Path(final)
    if is_dir and final.is_dir() and any(final.iterdir()):
        # Snakemake removes a directory() output before its job; anything else may be the user's.
        raise UserError(f"{final}: folder exists and is not empty; remove it or choose another")
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    # mkdtemp/mkstemp make 0700/0600; the output gets the mode a plain mkdir/open would give.
    os.chmod(tmp, (0o777 if is_dir else 0o666) & ~umask)
    try:
        yield tmp
        if is_dir and final.is_dir():
            final.rmdir()  # empty, checked above
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path | str, data: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())
