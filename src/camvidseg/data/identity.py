"""Content identity of files and folders: what a result was made from, as a short string.

A file (an archive, a model, a metrics JSON) is identified by its sha256, computed once and kept in
a small cache keyed by path, size and modification time (ns), so later looks cost a ``stat``. A
folder is identified by a hash of every file's relative path, size and mtime (ns): cheap enough
for every parse of the Snakefile (a few ms for CamVid's 1,400 files), and it changes when any file
is added, removed, rewritten or touched. Several archive parts are one stream: the sha256 of their
concatenation (``core.fileio.sha256_file``, the project's one file hash). The Snakefile imports
this module while it parses, so it uses the standard library and core.fileio only.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from pathlib import Path

from ..core.fileio import sha256_file

# The Snakefile sets this for itself and its jobs: the cache lives in the workflow's folder.
CACHE_ENV = "CAMVIDSEG_HASH_CACHE"
CACHE_FILE = ".snakemake/camvidseg/hashes.json"


class HashCache:
    """sha256 per (real path, size, mtime_ns) in a JSON file; without a path it only memoises."""

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
        stats = [os.stat(p) for p in paths]
        key = "\n".join(os.path.realpath(p) for p in paths)
        signature = [[s.st_size, s.st_mtime_ns] for s in stats]
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


def folder_id(folder: Path | str) -> str:
    """``files:`` + hash of (relative path, size, mtime_ns) of every file below ``folder``."""
    digest = hashlib.sha256()
    for rel, size, mtime in sorted(_walk(str(folder), "")):
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return "files:" + digest.hexdigest()


def _walk(top: str, prefix: str):
    with os.scandir(top) as entries:
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir():
                yield from _walk(entry.path, rel + "/")
            else:
                stat = entry.stat()
                yield rel, stat.st_size, stat.st_mtime_ns


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
