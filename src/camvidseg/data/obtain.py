"""Stage 1: obtain the CamVid archive (or backbone weights) into ``resources/``.

Routes: ``url`` (resumable HTTP(S) with retries, progress and optional sha256), ``opendatalab``
(``odl get CamVid``, the original example's route), ``openxlab`` (its successor), and ``weights``
(torchvision's ImageNet backbone weights, so compute nodes need no network). The two dataset CLIs
pin old packages, so they are looked up on PATH or in ``.venv-download/`` (``make download-tools``),
never installed into the training environment. Credentials stay with those CLIs.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, read_json, sha256_file, write_json
from ..core.progress import Progress
from ..core.settings import describe
from ..workflow.madeby import Record
from .identity import in_part_order, redact_url

REPO_ROOT = Path(__file__).resolve().parents[3]
NETWORK_ERRORS = ("ConnectionError", "Name or service not known", "Network is unreachable")
HOW_TO_PROVIDE = (
    "or fetch the archive yourself and set dataset.source: local and dataset.path: <file or folder>"
)


SAFE_SCHEMES = ("http", "https")


def check_http_url(url: str, key: str) -> None:
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise UserError(f"{key}: the URL holds spaces or control characters; percent-encode them")
    try:
        parts = urllib.parse.urlsplit(url)  # lower-cases the scheme: HTTP:// is http://
        _ = parts.port  # parsing the port is what checks it
    except ValueError as err:
        raise UserError(f"{key}: not a valid URL ({err})") from None
    if parts.scheme not in SAFE_SCHEMES or not parts.netloc:
        raise UserError(f"{key}: {redact_url(url)!r} is not an http(s) URL")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to http(s), at every hop (urllib itself also follows ftp://)."""

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("Location") or headers.get("URI") or ""
        target = urllib.parse.urljoin(req.full_url, location)
        if urllib.parse.urlsplit(target).scheme not in SAFE_SCHEMES:
            raise UserError(
                f"{redact_url(req.full_url)} redirects to {redact_url(target)!r}: only http(s) "
                "redirects are followed"
            )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _record_path(part: Path) -> Path:
    """Beside ``X.part``: which URL (hashed: no token is written) and which version of the
    file on the server (ETag, Last-Modified, size) the partial bytes came from."""
    return part.with_name(part.name + ".json")


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _validators(response) -> dict:
    total = None
    if response.status == 206:
        match = re.fullmatch(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
        total = int(match.group(1)) if match else None
    elif response.headers.get("Content-Length") is not None:
        total = int(response.headers["Content-Length"])
    etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
    return {"etag": etag, "last_modified": modified, "length": total}


def _resumable_bytes(url: str, part: Path, record: dict | None) -> int:
    """Bytes of ``part`` to resume from: none unless it was started from this very URL."""
    have = part.stat().st_size if part.exists() else 0
    if have and record is not None and record.get("url_sha256") == _url_key(url):
        return have
    if have:
        why = "was started from another URL" if record else "has no record of its URL"
        print(f"restarting the download: {part.name} {why}", flush=True)
    return 0


def _changed(response, record: dict) -> str | None:
    """Why the server's answer to a range request cannot continue our bytes, if it cannot."""
    if response.status != 206:
        return f"the server sent the whole file (HTTP {response.status}), not the missing range"
    now = _validators(response)
    for key, label in (("etag", "ETag"), ("last_modified", "Last-Modified"), ("length", "size")):
        if None not in (record.get(key), now[key]) and record[key] != now[key]:
            return f"the file on the server changed ({label} {record[key]} -> {now[key]})"
    return None


def _request(url: str, have: int, record: dict | None, timeout: float):
    headers = {"User-Agent": "camvidseg"}
    if have and record is not None:
        headers["Range"] = f"bytes={have}-"
        etag = record.get("etag") or ""
        validator = etag if etag and not etag.startswith("W/") else record.get("last_modified")
        if validator:  # a server that honours If-Range sends the whole file if it changed
            headers["If-Range"] = validator
    return _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)


class WebPageError(Exception):
    """The server answered with a web page (a login or error page sent with 200), not a file."""

    def __init__(self, url: str, why: str):
        super().__init__(why)
        self.url, self.why = url, why


WEB_PAGE_TYPES = ("text/html", "application/xhtml+xml")
WEB_PAGE_STARTS = (b"<!doctype html", b"<html")


def _refuse_web_page(response, first: bytes) -> None:
    """Raise WebPageError when the answer is a web page: by its Content-Type, or by how its bytes
    start (servers label login pages as anything). Asking again would bring the same page."""
    kind = response.headers.get_content_type()
    start = first.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if kind in WEB_PAGE_TYPES:
        raise WebPageError(response.geturl(), f"Content-Type {kind}")
    if start.startswith(WEB_PAGE_STARTS):
        raise WebPageError(
            response.geturl(), f"it begins {first.strip()[:14].decode(errors='replace')!r}"
        )


def _receive(response, part: Path, have: int, first: bytes) -> None:
    if have:
        print(f"resuming at {have} bytes", flush=True)
    length = response.headers.get("Content-Length")
    expected = int(length) + have if length is not None else None
    with (
        part.open("ab" if have else "wb") as out,
        Progress("download", expected, "bytes", already=have) as progress,
    ):
        out.write(first)
        progress.advance(len(first))
        while block := response.read(1 << 16):
            out.write(block)
            progress.advance(len(block))
    size = part.stat().st_size
    if expected is not None and size < expected:
        raise http.client.IncompleteRead(b"", expected - size)


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    record_path = _record_path(part)
    try:
        record = read_json(record_path) if record_path.is_file() else None
    except ValueError:  # unreadable: as if there were none
        record = None
    have = _resumable_bytes(url, part, record)
    response = _request(url, have, record, timeout)
    try:
        why = _changed(response, record) if have else None
        if why:
            print(f"restarting the download: {why}", flush=True)
            response.close()
            have, response = 0, _request(url, 0, None, timeout)
        first = response.read(1 << 16)
        _refuse_web_page(response, first)
        if not have:
            write_json(record_path, {"url_sha256": _url_key(url), **_validators(response)})
        _receive(response, part, have, first)
    finally:
        response.close()


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _record_path(part).unlink(missing_ok=True)


def _retry_reason(err: Exception, part: Path, shown: str, hint: str) -> str:
    """Why an attempt failed, to retry it; raises for errors that retrying cannot heal."""
    if isinstance(err, urllib.error.HTTPError):
        if err.code == 416:  # our partial file is not a prefix of this resource
            _discard(part)
        elif err.code < 500 and err.code not in (408, 429):
            raise UserError(f"cannot download {shown}: HTTP {err.code} {err.reason}; {hint}")
        return f"HTTP {err.code}"
    if isinstance(err, http.client.InvalidURL):  # its message quotes the URL: not shown
        raise UserError(f"cannot download {shown}: the server or a redirect gave an invalid URL")
    reason = getattr(err, "reason", err)
    if isinstance(reason, socket.gaierror):
        raise UserError(
            f"cannot download {shown}: host name lookup failed ({reason.strerror}; offline, or "
            f"a wrong host or proxy name); {hint}"
        )
    if isinstance(reason, ssl.SSLCertVerificationError):
        raise UserError(f"cannot download {shown}: {reason.verify_message}; {hint}")
    return str(reason) or type(err).__name__


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
    check_http_url(url, "dataset.url")
    shown = redact_url(url)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    print(f"downloading {shown}", flush=True)
    for attempt in range(1, retries + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except WebPageError as page:
            raise UserError(
                f"cannot download {shown}: the server sent a web page ({page.why}) from "
                f"{redact_url(page.url)}, not the file: a login page, or an expired or "
                f"unauthorised link?; {hint}"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = _retry_reason(err, part, shown, hint)
        if attempt == retries:
            raise UserError(f"cannot download {shown} after {retries} tries ({reason}); {hint}")
        wait = backoff * 2 ** (attempt - 1)
        print(f"attempt {attempt} failed ({reason}); retrying in {wait:.1f} s", flush=True)
        time.sleep(wait)
    if sha256:
        actual = sha256_file(part)
        if actual != sha256.lower():
            _discard(part)
            raise UserError(
                f"{shown}: sha256 mismatch (expected {sha256}, got {actual}); "
                "the download was removed"
            )
        print("sha256 verified", flush=True)
    os.replace(part, out)
    _record_path(part).unlink(missing_ok=True)


def find_tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(REPO_ROOT / ".venv-download" / "bin"))
    if not found:
        raise UserError(
            f"the `{name}` command (package {package}) is not installed; run `make download-tools` "
            f"(a separate .venv-download) or use `--sdm conda`, {HOW_TO_PROVIDE}"
        )
    return found


def run_tool(command: list[str], login_hint: str, download_dir: Path) -> None:
    """Run a dataset CLI. When it fails, its stderr (often a long traceback) goes to a file in
    ``download_dir`` and the log gets one line with the likely cause."""
    print("running:", " ".join(command), flush=True)
    result = subprocess.run(command, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
    if not result.returncode:
        sys.stderr.write(result.stderr)
        return
    saved = download_dir / f"{Path(command[0]).name}-error.log"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(result.stderr)
    last = (result.stderr.strip().splitlines() or ["no message"])[-1]
    offline = any(sign in result.stderr for sign in NETWORK_ERRORS)
    hint = "no network connection to the dataset server" if offline else login_hint
    raise UserError(
        f"`{' '.join(command[:3])}` failed (exit {result.returncode}: {last[:200]}); "
        f"{hint}; its full output is in {saved}; {HOW_TO_PROVIDE}"
    )


def archive_parts(folder: Path) -> list[Path]:
    """``CamVid.tar.gz`` or its parts ``.00 .01 ...`` in numeric order, found below ``folder``."""
    parts = in_part_order(folder.rglob("CamVid.tar.gz.*"))
    if parts:
        return parts
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


def fetch_url(args: argparse.Namespace) -> None:
    url = args.url
    if args.url_env is not None:
        url = os.environ.get(args.url_env, "")
        if not url:
            raise UserError(f"--url-env: the environment variable {args.url_env} is unset or empty")
    download(url, args.out, args.sha256, args.retries, args.backoff, args.timeout)


def fetch_opendatalab(args: argparse.Namespace) -> None:
    odl = find_tool("odl", "opendatalab")
    call = [odl, "get", "CamVid", "-d", str(args.download_dir)]
    run_tool(call, "log in with `odl login` first", args.download_dir)
    join_parts(archive_parts(args.download_dir), args.out)


def fetch_openxlab(args: argparse.Namespace) -> None:
    openxlab = find_tool("openxlab", "openxlab")
    call = [openxlab, "dataset", "get", "--dataset-repo", "OpenDataLab/CamVid",
            "--target-path", str(args.download_dir)]  # fmt: skip
    hint = "log in with `openxlab login` (your keys stay in your home directory)"
    run_tool(call, hint, args.download_dir)
    join_parts(archive_parts(args.download_dir), args.out)


def fetch_weights(args: argparse.Namespace) -> None:
    from ..training.segmenter import backbone_weights_url

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
    if prefix and not sha256_file(args.out).startswith(prefix.group(1)):
        args.out.unlink()
        raise UserError(f"{source}: downloaded weights fail torchvision's hash check")


# route: (what it does, how)
ROUTES = {
    "url": ("download an archive over http(s)", fetch_url),
    "opendatalab": ("download with the opendatalab CLI (odl)", fetch_opendatalab),
    "openxlab": ("download with the openxlab CLI", fetch_openxlab),
    "weights": ("torchvision ImageNet backbone weights", fetch_weights),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command.parser(__file__, __doc__)
    sub = parser.add_subparsers(
        dest="route", required=True, metavar="route", help="where from (route --help: its options)"
    )
    for route, (what, _) in ROUTES.items():
        sub.add_parser(route, help=what, description=what, formatter_class=parser.formatter_class)
    url, weights = sub.choices["url"], sub.choices["weights"]
    given = url.add_mutually_exclusive_group(required=True)
    given.add_argument("--url", help=describe("dataset.url"))
    given.add_argument(
        "--url-env",
        metavar="VARIABLE",
        help="read the URL from this environment variable instead (a signed URL's token then "
        "appears on no command line)",
    )
    url.add_argument("--sha256", default="", help=describe("dataset.sha256"))
    for route in ("opendatalab", "openxlab"):
        sub.choices[route].add_argument(
            "--download-dir", required=True, type=Path, help="folder the CLI downloads into"
        )
    weights.add_argument("--model", required=True, help=describe("model.name"))
    for p in (url, weights):
        p.add_argument(
            "--retries",
            type=int,
            default=5,
            help="attempts in all; errors that cannot heal (host name lookup, most HTTP 4xx) "
            "are not retried",
        )
        p.add_argument("--backoff", type=float, default=2.0, help="first wait between tries (s)")
        p.add_argument("--timeout", type=float, default=60.0, help="socket timeout (s)")
    for p in sub.choices.values():
        p.add_argument("--out", required=True, type=Path, help="file to write")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    made = Record(__file__, args, [], [args.out])
    _, fetch = ROUTES[args.route]
    fetch(args)
    made.write()
    print(f"obtained {args.out}")


if __name__ == "__main__":
    main()
