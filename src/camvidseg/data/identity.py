"""Content identity of files and folders: what a result was made from, as a short string.

Every file has a cheap key from one ``stat``: size, mtime, ctime and inode. No user sets a ctime
(any write, copy, ``cp -p``, ``rsync -t`` or ``touch`` bumps it), so other bytes under the same
name, size and mtime still change the key. A file (an archive, a model, a metrics JSON) is
identified by its sha256, computed once and kept in a small cache under that key, so later looks
cost a ``stat``. A folder's cheap identity hashes every file's relative path and key: a few ms
for CamVid's 1,400 files at every parse of the Snakefile, changed by any file added, removed,
rewritten or touched. Its content identity (:func:`tree_content_id`, for a dataset folder) hashes
every file's path and sha256 behind the same cache: new pixels are seen, a touch alone is no new
data. Several archive parts are one stream: the sha256 of their concatenation
(``core.fileio.sha256_file``, the project's one file hash). The Snakefile imports this module while
it parses, so it uses the standard library and core.fileio only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from pathlib import Path

from ..core.errors import UserError
from ..core.fileio import refuse_special_file, sha256_file

# The Snakefile sets this for itself and its jobs: the cache lives in the workflow's folder.
CACHE_ENV = "CAMVIDSEG_HASH_CACHE"
CACHE_FILE = ".snakemake/camvidseg/hashes.json"
# A URL inside any text (a command, a setting): scheme://, then up to whitespace or a quote.
URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
# Snakemake writes this into a directory() output once its job is done: not the stage's content.
SNAKEMAKE_MARKER = ".snakemake_timestamp"


class HashCache:
    """sha256 per (real path, cheap key) in a JSON file; without a path it only memoises."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else None
        self.entries: dict[str, list] = {}
        self.changed = False
        if self.path and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except ValueError:
                self.entries = {}  # a torn write: start again, the hashes are recomputed

    @classmethod
    def from_env(cls) -> HashCache:
        return cls(os.environ.get(CACHE_ENV))

    def sha256(self, paths: list[Path]) -> str:
        """sha256 of the files' bytes, one after the other."""
        key = "\n".join(os.path.realpath(p) for p in paths)
        signature = [cheap_key(os.stat(p)) for p in paths]
        hit = self.entries.get(key)
        if hit and hit[0] == signature:
            return hit[1]
        self.entries[key] = [signature, sha256_file(*paths)]
        self.changed = True
        return self.entries[key][1]

    def save(self) -> None:
        """Write the cache if it learnt something (atomically: parallel jobs may share it)."""
        if not (self.path and self.changed):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.entries, sort_keys=True))
        os.replace(tmp, self.path)
        self.changed = False


def cheap_key(stat: os.stat_result) -> list[int]:
    """A file's key from one stat: size, mtime, ctime (which no user sets) and inode."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def folder_id(folder: Path | str) -> str:
    """``files:`` + hash of the relative path and cheap key of every file below ``folder``."""
    digest = hashlib.sha256()
    for rel, path in sorted(_walk(str(folder), "")):
        digest.update(f"{rel}\0{cheap_key(os.stat(path))}\n".encode(errors="surrogateescape"))
    return "files:" + digest.hexdigest()


def tree_content_id(folder: Path | str, cache: HashCache) -> str:
    """``tree:`` + hash of the relative path and sha256 of every file below ``folder`` (each
    sha256 cached under the file's cheap key): the same bytes give the same id, whatever the
    files' times."""
    digest = hashlib.sha256()
    for rel, path in sorted(_walk(str(folder), "")):
        digest.update(f"{rel}\0{cache.sha256([Path(path)])}\n".encode(errors="surrogateescape"))
    return "tree:" + digest.hexdigest()


def cheap_id(paths: list[Path | str]) -> str:
    """A folder's :func:`folder_id`, or the real paths and cheap keys of files (archive parts)."""
    if len(paths) == 1 and os.path.isdir(paths[0]):
        return folder_id(paths[0])
    keys = [[os.path.realpath(p), cheap_key(os.stat(p))] for p in paths]
    return "stat:" + hashlib.sha256(json.dumps(keys).encode()).hexdigest()


def write_if_changed(path: Path | str, text: str) -> bool:
    """Write ``text`` to ``path`` (atomically) unless it holds it already: its mtime then
    changes exactly when its content does. Returns whether it wrote."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass  # absent or unreadable: written anew
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _walk(top: str, prefix: str, above: frozenset = frozenset()):
    """(relative path, path) of every file below ``top``, links followed. A link back into a
    folder above, a broken link and a FIFO or device are one line each: hashing them would
    never end, or fail with a traceback."""
    status = os.stat(top)
    here = (status.st_dev, status.st_ino)
    if here in above:
        raise UserError(f"{top}: a link that leads back into a folder above it (a loop)")
    with os.scandir(top) as entries:
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir():
                yield from _walk(entry.path, rel + "/", above | {here})
            elif entry.name == SNAKEMAKE_MARKER:
                continue
            elif entry.is_file():
                yield rel, entry.path
            elif entry.is_symlink() and not os.path.exists(entry.path):
                raise UserError(f"{entry.path}: broken link (to {os.readlink(entry.path)})")
            else:
                refuse_special_file(entry.path)


def content_id(paths: list[Path | str] | Path | str, cache: HashCache | None = None) -> str:
    """Identity of one folder, or of one file or archive parts (``sha256:`` + hex)."""
    paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(missing[0])
    if len(paths) == 1 and paths[0].is_dir():
        return folder_id(paths[0])
    return "sha256:" + (cache or HashCache()).sha256(paths)


def part_number(path: Path | str) -> int | None:
    """N of an archive part ``X.tar.gz.N`` (digits after the last dot), else None."""
    suffix = str(path).rpartition(".")[2]
    return int(suffix) if "." in str(path) and suffix.isdigit() else None


def in_part_order(paths) -> list[Path]:
    """The archive parts among ``paths`` in the one order they join in: by part number."""
    parts = [Path(p) for p in paths if part_number(p) is not None]
    return sorted(parts, key=part_number)


def redact_url(url: str) -> str:
    """``url`` as the project writes it anywhere (logs, errors, Snakemake params): a signed URL
    carries its token in the query, so the query, the fragment and any user:password go."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<an invalid URL>"
    host = parts.netloc.rpartition("@")[2]
    netloc = f"<redacted>@{host}" if "@" in parts.netloc else host
    query = "<redacted>" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_secrets(value):
    """``value`` (settings, a record, a command line; nested dicts and lists of them) with every
    URL inside it redacted as :func:`redact_url` does. The one filter for whatever is written to
    a file or put on a command line: a signed dataset URL's token must reach neither."""
    if isinstance(value, dict):
        return {key: redact_secrets(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(item) for item in value]
    if isinstance(value, str):
        return URL_IN_TEXT.sub(lambda found: redact_url(found.group()), value)
    return value
