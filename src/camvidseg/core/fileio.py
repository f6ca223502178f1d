"""Atomic outputs: a stage either leaves a complete output or none at all (and the one sha256 of
files' bytes, ``sha256_file``).

The temporary sibling an output is written into carries its writer's process id and host in its
name; a process killed outright (SIGKILL, out of memory) cannot remove it, so the next write into
the same folder removes every such temporary whose writer is no longer running on this host, of
whichever output: a killed writer's output may never be written again (a checkpoint that the
resumed training moves past).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError, refused_write


@contextlib.contextmanager
def atomic_path(final: Path | str, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; move it into place only if the block succeeds.
    A write the environment refuses (file-size limit, full disk, read-only folder) is one line
    naming ``final``."""
    final = Path(final)
    if is_dir:
        refuse_nonempty_folder(final)
    elif final.is_dir():  # someone's folder: the rename would fail only after all the work
        raise UserError(f"{final}: is a folder, where a file goes; remove it or choose another")
    try:
        with _temporary_sibling(final, is_dir) as tmp:
            yield tmp
    except OSError as err:
        refusal = refused_write(err, final) if _own_path(err.filename, final) else None
        if refusal is None:
            raise
        raise refusal from None


def _own_path(filename: str | bytes | None, final: Path) -> bool:
    """Whether a failed path is the output's own (its folders, temporary or final path), not
    an input the block happened to read. A failed write() names no path: it is the output's."""
    if filename is None:
        return True
    path = Path(os.fsdecode(filename))
    temporary = str(final.parent / f".{final.name}.")
    return final.is_relative_to(path) or str(path).startswith((str(final), temporary))


@contextlib.contextmanager
def _temporary_sibling(final: Path, is_dir: bool) -> Iterator[Path]:
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in remove_stale_temporaries(final):
        print(f"removed {leftover}, left by a run that was killed", flush=True)
    prefix = f".{final.name}.{os.getpid()}@{socket.gethostname()}."
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
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


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove the temporaries in ``final``'s folder whose writer died on this host, and this
    process's own leftovers of ``final`` (never its other outputs: it may be writing them);
    returns them."""
    host = re.escape(socket.gethostname())
    pattern = re.compile(rf"\.(.+)\.(\d+)@{host}\.\w{{8}}")
    removed = []
    for sibling in final.parent.glob(".*"):
        match = pattern.fullmatch(sibling.name)
        if match is None:
            continue
        output, pid = match.group(1), int(match.group(2))
        mine = pid == os.getpid()
        if (mine and output == final.name) or (not mine and not _running(pid)):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed


def refuse_nonempty_folder(folder: Path | str) -> None:
    """A folder output must be absent or empty: a stage never replaces what it did not make.
    Called early too, so a user learns it before minutes of model loading."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder; remove it or choose another")
    if folder.is_dir() and any(folder.iterdir()):
        # Snakemake removes a directory() output before its job; anything else may be the user's.
        raise UserError(f"{folder}: folder exists and is not empty; remove it or choose another")


def refuse_special_file(path: Path | str) -> None:
    """Refuse a FIFO, device or socket where a file is read: reading one waits for a writer
    or never ends (/dev/zero)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing or unreachable: the read that follows says so
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UserError(f"{path}: not a regular file (a FIFO, device or socket)")


def sha256_file(*paths: Path | str) -> str:
    """sha256 (hex) of the files' bytes, one after the other, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for path in paths:
        refuse_special_file(path)
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def write_json(path: Path | str, data: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: Path | str) -> dict:
    """A JSON object from ``path``; a missing file, a folder or other text is one line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'not a file' if path.exists() else 'file not found'}")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
