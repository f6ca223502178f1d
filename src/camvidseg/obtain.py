"""Stage 1: obtain the CamVid archive (or backbone weights) into ``resources/``.

Routes: ``url`` (resumable HTTP(S) with retries, progress and optional sha256), ``opendatalab``
(``odl get CamVid``, the original example's route), ``openxlab`` (its successor), and ``weights``
(torchvision's ImageNet backbone weights, so compute nodes need no network). The two dataset CLIs
pin old packages, so they are looked up on PATH or in ``.venv-download/`` (``make download-tools``),
never installed into the training environment. Credentials stay with those CLIs.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import command
from .errors import UserError, cli
from .fileio import atomic_path
from .settings import describe

REPO_ROOT = Path(__file__).resolve().parents[2]
NETWORK_ERRORS = ("ConnectionError", "Name or service not known", "Network is unreachable")
HOW_TO_PROVIDE = (
    "or fetch the archive yourself and set dataset.source: local and dataset.path: <file or folder>"
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Progress:
    """A progress line at most every 2 s (the rule log is a file, so no carriage-return bar)."""

    def __init__(self, total: int | None, start: int):
        self.total, self.done, self.last = total, start, 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= 2 or (self.total and self.done >= self.total):
            self.last = now
            if self.total:
                print(
                    f"  {self.done / 2**20:8.1f} / {self.total / 2**20:.1f} MiB "
                    f"({100 * self.done / self.total:5.1f} %)",
                    flush=True,
                )
            else:
                print(f"  {self.done / 2**20:8.1f} MiB", flush=True)


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "camvidseg", **({"Range": f"bytes={have}-"} if have else {})}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and response.status != 206:
            have = 0  # the server ignored Range: start over
        if have:
            print(f"resuming at {have} bytes", flush=True)
        length = response.headers.get("Content-Length")
        expected = int(length) + have if length is not None else None
        progress = _Progress(expected, have)
        with part.open("ab" if have else "wb") as out:
            while block := response.read(1 << 16):
                out.write(block)
                progress.update(len(block))
    size = part.stat().st_size
    if expected is not None and size < expected:
        raise http.client.IncompleteRead(b"", expected - size)


def download(
    url: str,
    out: Path,
    sha256: str = "",
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    hint: str = HOW_TO_PROVIDE,
) -> None:
    """Download ``url`` to ``out`` via ``out.part``, resuming and retrying; verify ``sha256``."""
    if not re.match(r"^https?://", url):
        raise UserError(f"dataset.url: {url!r} is not an http(s) URL")
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    print(f"downloading {url}", flush=True)
    for attempt in range(1, retries + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except urllib.error.HTTPError as err:
            if err.code == 416:  # our partial file is not a prefix of this resource
                part.unlink(missing_ok=True)
            elif err.code < 500 and err.code not in (408, 429):
                raise UserError(
                    f"cannot download {url}: HTTP {err.code} {err.reason}; {hint}"
                ) from None
            reason = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = str(getattr(err, "reason", err)) or type(err).__name__
        if attempt == retries:
            raise UserError(f"cannot download {url} after {retries} tries ({reason}); {hint}")
        wait = backoff * 2 ** (attempt - 1)
        print(f"attempt {attempt} failed ({reason}); retrying in {wait:.1f} s", flush=True)
        time.sleep(wait)
    if sha256:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink()
            raise UserError(
                f"{url}: sha256 mismatch (expected {sha256}, got {actual}); "
                "the download was removed"
            )
        print("sha256 verified", flush=True)
    os.replace(part, out)


def find_tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(REPO_ROOT / ".venv-download" / "bin"))
    if not found:
        raise UserError(
            f"the `{name}` command (package {package}) is not installed; run `make download-tools` "
            f"(a separate .venv-download) or use `--sdm conda`, {HOW_TO_PROVIDE}"
        )
    return found


def run_tool(command: list[str], login_hint: str) -> None:
    print("running:", " ".join(command), flush=True)
    result = subprocess.run(command, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(result.stderr)
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        offline = any(sign in result.stderr for sign in NETWORK_ERRORS)
        hint = "no network connection to the dataset server" if offline else login_hint
        raise UserError(
            f"`{' '.join(command[:3])}` failed (exit {result.returncode}: {last[:200]}); "
            f"{hint}; {HOW_TO_PROVIDE}"
        )


def archive_parts(folder: Path) -> list[Path]:
    """``CamVid.tar.gz`` or its parts ``.00 .01 ...`` in numeric order, found below ``folder``."""
    parts = [p for p in folder.rglob("CamVid.tar.gz.*") if p.suffix[1:].isdigit()]
    if parts:
        return sorted(parts, key=lambda p: int(p.suffix[1:]))
    whole = sorted(folder.rglob("CamVid.tar.gz")) + sorted(folder.rglob("CamVid.zip"))
    if not whole:
        raise UserError(f"{folder}: the download holds no CamVid.tar.gz(.NN) archive")
    return whole[:1]


def join_parts(parts: list[Path], out: Path) -> None:
    with atomic_path(out) as tmp, tmp.open("wb") as joined:
        for part in parts:
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, joined, 1 << 20)
    print(f"joined {len(parts)} part(s) into {out}")


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    sub = parser.add_subparsers(
        dest="route", required=True, metavar="route", help="where from (route --help: its options)"
    )
    routes = {
        "url": "download an archive over http(s)",
        "opendatalab": "download with the opendatalab CLI (odl)",
        "openxlab": "download with the openxlab CLI",
        "weights": "torchvision ImageNet backbone weights",
    }
    for route, what in routes.items():
        sub.add_parser(route, help=what, description=what, formatter_class=parser.formatter_class)
    url, weights = sub.choices["url"], sub.choices["weights"]
    url.add_argument("--url", required=True, help=describe("dataset.url"))
    url.add_argument("--sha256", default="", help=describe("dataset.sha256"))
    for route in ("opendatalab", "openxlab"):
        sub.choices[route].add_argument(
            "--download-dir", required=True, type=Path, help="folder the CLI downloads into"
        )
    weights.add_argument("--model", required=True, help=describe("model.name"))
    for p in (url, weights):
        p.add_argument("--retries", type=int, default=5, help="tries after the first failure")
        p.add_argument("--backoff", type=float, default=2.0, help="first wait between tries (s)")
        p.add_argument("--timeout", type=float, default=60.0, help="socket timeout (s)")
    for p in sub.choices.values():
        p.add_argument("--out", required=True, type=Path, help="file to write")
    args = parser.parse_args(argv)

    if args.route == "url":
        download(args.url, args.out, args.sha256, args.retries, args.backoff, args.timeout)
    elif args.route == "opendatalab":
        odl = find_tool("odl", "opendatalab")
        run_tool(
            [odl, "get", "CamVid", "-d", str(args.download_dir)], "log in with `odl login` first"
        )
        join_parts(archive_parts(args.download_dir), args.out)
    elif args.route == "openxlab":
        openxlab = find_tool("openxlab", "openxlab")
        run_tool(
            [
                openxlab,
                "dataset",
                "get",
                "--dataset-repo",
                "OpenDataLab/CamVid",
                "--target-path",
                str(args.download_dir),
            ],
            "log in with `openxlab login` (your keys stay in your home directory)",
        )
        join_parts(archive_parts(args.download_dir), args.out)
    else:
        from .model import backbone_weights_url

        source = backbone_weights_url(args.model)
        download(
            source,
            args.out,
            retries=args.retries,
            backoff=args.backoff,
            timeout=args.timeout,
            hint=f"put the file at {args.out}, or set "
            "model.backbone_weights to a local weights file, or to none",
        )
        # torchvision names its files <name>-<first 8 hex digits of the sha256>.pth
        prefix = re.search(r"-([0-9a-f]{8,})\.pth$", source)
        if prefix and not sha256_of(args.out).startswith(prefix.group(1)):
            args.out.unlink()
            raise UserError(f"{source}: downloaded weights fail torchvision's hash check")
    print(f"obtained {args.out}")


if __name__ == "__main__":
    main()
