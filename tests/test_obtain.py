"""Obtaining the archive: a real HTTP server on 127.0.0.1, stand-in dataset CLIs on PATH."""

import hashlib
import http.server
import json
import os
import shutil
import stat
import sys
import threading
import typing
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY, assert_one_line_error, run_cli, snakemake

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Handler(http.server.BaseHTTPRequestHandler):
    drops_left = 0  # responses cut off half-way before the server behaves
    requests: typing.ClassVar[list] = []  # Range header of each request to a file
    files: typing.ClassVar[dict] = {}  # path -> bytes, served with Range support
    etags: typing.ClassVar[dict] = {}  # path -> ETag header value (If-Range is ignored)
    redirects: typing.ClassVar[dict] = {}  # path -> Location
    types: typing.ClassVar[dict] = {}  # path -> Content-Type header value
    hits: typing.ClassVar[list] = []  # every path asked for

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        Handler.hits.append(path)
        if path in Handler.redirects:
            self.send_response(302)
            self.send_header("Location", Handler.redirects[path])
            self.end_headers()
            return
        if path not in Handler.files:
            self.send_error(404)
            return
        Handler.requests.append(self.headers.get("Range"))
        payload = Handler.files[path]
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        body = payload[start:]
        self.send_header("Content-Length", str(len(body)))
        if path in Handler.etags:
            self.send_header("ETag", Handler.etags[path])
        if path in Handler.types:
            self.send_header("Content-Type", Handler.types[path])
        self.end_headers()
        if Handler.drops_left:
            Handler.drops_left -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # drop the connection mid-transfer
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.requests, Handler.hits, Handler.drops_left = [], [], 0
    Handler.files, Handler.etags, Handler.redirects = {"/CamVid.tar.gz": PAYLOAD}, {}, {}
    Handler.types = {}
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def fetch(tmp_path, url, *extra):
    out = tmp_path / "CamVid.tar.gz"
    result = run_cli(
        "obtain",
        "url",
        "--url",
        url,
        "--out",
        out,
        "--backoff",
        "0.05",
        "--timeout",
        "5",
        *extra,
        check=False,
    )
    return result, out


def test_download_with_checksum(tmp_path, server):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    result, out = fetch(tmp_path, f"{server}/CamVid.tar.gz", "--sha256", digest)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == PAYLOAD and "sha256 verified" in result.stdout
    assert "download: 1.0/1.0 MiB 100% in " in result.stdout  # progress in the log


def test_dropped_connection_resumes_with_range(tmp_path, server):
    Handler.drops_left = 2
    result, out = fetch(tmp_path, f"{server}/CamVid.tar.gz")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == PAYLOAD
    assert Handler.requests[0] is None
    assert Handler.requests[1] == f"bytes={len(PAYLOAD) // 2}-"  # resumed, not restarted
    assert "resuming at" in result.stdout and "retrying in" in result.stdout


def interrupted(tmp_path, url):
    """A first run that dies half-way (one try, connection dropped): leaves X.part behind."""
    Handler.drops_left = 1
    result, out = fetch(tmp_path, url, "--retries", "1")
    assert result.returncode == 2 and not out.exists()
    part = tmp_path / "CamVid.tar.gz.part"
    assert 0 < part.stat().st_size < len(PAYLOAD)
    Handler.requests.clear()
    return part.stat().st_size


def test_interrupted_download_is_resumed_by_the_next_run(tmp_path, server):
    have = interrupted(tmp_path, f"{server}/CamVid.tar.gz")
    result, out = fetch(tmp_path, f"{server}/CamVid.tar.gz")
    assert result.returncode == 0 and out.read_bytes() == PAYLOAD
    assert Handler.requests == [f"bytes={have}-"]
    assert not (tmp_path / "CamVid.tar.gz.part.json").exists()  # the record goes with the part


def test_partial_download_is_not_resumed_from_another_url(tmp_path, server):
    """Issue 10.8: kill a download, point the URL at another mirror, rerun: fresh bytes."""
    interrupted(tmp_path, f"{server}/CamVid.tar.gz")
    other = bytes(reversed(PAYLOAD))
    Handler.files["/mirror/CamVid.tar.gz"] = other
    digest = hashlib.sha256(other).hexdigest()
    result, out = fetch(tmp_path, f"{server}/mirror/CamVid.tar.gz", "--sha256", digest)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == other and "sha256 verified" in result.stdout
    assert "restarting the download: CamVid.tar.gz.part was started from another URL" in (
        result.stdout
    )
    assert Handler.requests == [None]  # no Range: started over


def test_partial_download_without_a_record_restarts(tmp_path, server):
    (tmp_path / "CamVid.tar.gz.part").write_bytes(b"x" * 1000)  # from an unknown source
    result, out = fetch(tmp_path, f"{server}/CamVid.tar.gz")
    assert result.returncode == 0 and out.read_bytes() == PAYLOAD
    assert "CamVid.tar.gz.part has no record of its URL" in result.stdout
    assert Handler.requests == [None]


def test_partial_download_restarts_when_the_file_on_the_server_changed(tmp_path, server):
    Handler.etags["/CamVid.tar.gz"] = '"v1"'
    interrupted(tmp_path, f"{server}/CamVid.tar.gz")
    record = json.loads((tmp_path / "CamVid.tar.gz.part.json").read_text())
    assert record["etag"] == '"v1"' and record["length"] == len(PAYLOAD)
    assert "127.0.0.1" not in json.dumps(record)  # the URL is kept hashed
    new = PAYLOAD[::-1]
    Handler.files["/CamVid.tar.gz"], Handler.etags["/CamVid.tar.gz"] = new, '"v2"'
    result, out = fetch(tmp_path, f"{server}/CamVid.tar.gz")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == new
    assert 'the file on the server changed (ETag "v1" -> "v2")' in result.stdout
    assert Handler.requests[0].startswith("bytes=") and Handler.requests[1] is None


def test_checksum_mismatch_is_one_line_and_leaves_nothing(tmp_path, server):
    result, out = fetch(tmp_path, f"{server}/CamVid.tar.gz", "--sha256", "0" * 64)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "sha256 mismatch" in result.stderr
    assert not out.exists() and not (tmp_path / "CamVid.tar.gz.part").exists()


def test_unreachable_url_says_how_to_provide_the_archive(tmp_path, server):
    result, out = fetch(tmp_path, "http://127.0.0.1:9/CamVid.tar.gz", "--retries", "2")
    assert result.returncode == 2 and not out.exists()
    line = result.stderr.strip()
    assert "\n" not in line and "after 2 tries" in line and "dataset.source: local" in line
    result, _ = fetch(tmp_path, f"{server}/missing.tar.gz")
    assert "HTTP 404" in result.stderr and Handler.hits == ["/missing.tar.gz"]  # not retried


STAND_IN = """#!{python}
# Stand-in for the `{name}` CLI: writes the real layout, archive split in two parts.
import sys, pathlib
args = sys.argv[1:]
target = pathlib.Path(args[args.index("{flag}") + 1])
raw = target / "{prefix}CamVid" / "raw"
raw.mkdir(parents=True, exist_ok=True)
data = pathlib.Path("{archive}").read_bytes()
(raw / "CamVid.tar.gz.00").write_bytes(data[: len(data) // 2])
(raw / "CamVid.tar.gz.01").write_bytes(data[len(data) // 2 :])
print("downloaded", args)
"""


@pytest.mark.parametrize(
    ("route", "name", "flag", "prefix"),
    [("opendatalab", "odl", "-d", ""), ("openxlab", "openxlab", "--target-path", "OpenDataLab___")],
)
def test_dataset_clis_parts_are_joined(tmp_path, sample_archive, route, name, flag, prefix):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / name
    tool.write_text(
        STAND_IN.format(
            python=sys.executable, name=name, flag=flag, prefix=prefix, archive=sample_archive
        )
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "CamVid.tar.gz"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli("obtain", route, "--download-dir", tmp_path / "dl", "--out", out, env=env)
    assert out.read_bytes() == sample_archive.read_bytes()
    assert "joined 2 part(s)" in result.stdout


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        ("AuthError: please login", "openxlab login"),
        ("requests.exceptions.ConnectionError: Name or service not known", "no network"),
    ],
)
def test_cli_failure_is_one_line_with_the_likely_cause(tmp_path, message, hint):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "openxlab"
    tool.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"print('Traceback (most recent call last): ...', file=sys.stderr)\n"
        f"print({message!r}, file=sys.stderr)\nsys.exit(1)\n"
    )
    tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli(
        "obtain",
        "openxlab",
        "--download-dir",
        tmp_path / "dl",
        "--out",
        tmp_path / "x.tar.gz",
        env=env,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # the CLI's traceback goes to a file, not the log
    assert lines[0].startswith("error: `") and f"failed (exit 1: {message})" in lines[0]
    assert hint in lines[0] and "dataset.source: local" in lines[0]
    saved = tmp_path / "dl" / "openxlab-error.log"
    assert f"its full output is in {saved}" in lines[0]
    assert saved.read_text().startswith("Traceback (most recent call last)")
    assert not (tmp_path / "x.tar.gz").exists()


def test_missing_cli_says_what_to_do(tmp_path):
    # The package from a checkout without .venv-download/ (make download-tools may have made
    # this one's), and a PATH without the CLIs.
    skip_caches = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "src", tmp_path / "checkout/src", ignore=skip_caches)
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tmp_path / "checkout/src")}
    result = run_cli(
        "obtain",
        "opendatalab",
        "--download-dir",
        tmp_path,
        "--out",
        tmp_path / "x.tar.gz",
        env=env,
        check=False,
    )
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "`odl` command (package opendatalab) is not installed" in line
    assert "make download-tools" in line


@pytest.mark.parametrize("route", ["url", "local"])
def test_workflow_takes_the_archive_by_url_or_local_path(tmp_path, server, sample_archive, route):
    data = sample_archive.read_bytes()
    Handler.files["/mirror/CamVid.tgz"] = data
    dataset = {
        "url": {
            "source": "url",
            "url": f"{server}/mirror/CamVid.tgz?X-Amz-Signature=SECRET789",  # a signed URL
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "local": {"source": "local", "path": str(sample_archive)},
    }[route]
    config = yaml.safe_load(TINY.read_text()) | {"dataset": dataset}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path / "run", "--until", "palette", configfile=tmp_path / "config.yaml")
    manifest = json.loads((tmp_path / "run/results/data/dataset.json").read_text())
    assert manifest["sizes"] == {"train": 4, "val": 2, "test": 2}
    assert (tmp_path / "run/results/data/palette.json").is_file()
    downloaded = tmp_path / "run/resources/CamVid.tar.gz"
    assert downloaded.is_file() == (route == "url")
    assert sample_archive.read_bytes() == data  # the user's file is untouched
    # The token is in no file the run wrote: logs, outputs, Snakemake's metadata and logs.
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(".snakemake" in p.parts for p in written)
    assert [p for p in written if b"SECRET789" in p.read_bytes()] == []
    if route == "url":
        log = (tmp_path / "run/results/logs/obtain_dataset.log").read_text()
        assert f"downloading {server}/mirror/CamVid.tgz?<redacted>" in log


def test_upper_case_scheme_is_accepted(tmp_path, server):
    result, out = fetch(tmp_path, server.replace("http://", "HTTP://") + "/CamVid.tar.gz")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == PAYLOAD


def test_redirects_are_followed_only_to_http(tmp_path, server):
    Handler.redirects = {"/hop1": f"{server}/hop2", "/hop2": f"{server}/CamVid.tar.gz"}
    result, out = fetch(tmp_path, f"{server}/hop1")
    assert result.returncode == 0 and out.read_bytes() == PAYLOAD
    Handler.redirects = {"/hop1": f"{server}/hop2", "/hop2": "ftp://127.0.0.1/CamVid.tar.gz"}
    result, out = fetch(tmp_path / "x", f"{server}/hop1")
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{server}/hop2 redirects to 'ftp://127.0.0.1/CamVid.tar.gz'" in result.stderr
    assert "only http(s) redirects are followed" in result.stderr


def test_signed_url_query_is_never_written(tmp_path, server):
    url = f"{server}/CamVid.tar.gz?X-Amz-Signature=SECRET123&token=SECRET456"
    result, _ = fetch(tmp_path, url, "--sha256", "0" * 64)
    assert result.returncode == 2
    assert "SECRET" not in result.stdout + result.stderr
    assert f"{server}/CamVid.tar.gz?<redacted>: sha256 mismatch" in result.stderr
    assert f"downloading {server}/CamVid.tar.gz?<redacted>" in result.stdout


def test_host_name_lookup_failure_is_not_retried(tmp_path):
    result, out = fetch(tmp_path, "http://camvid.invalid/CamVid.tar.gz", "--backoff", "30")
    assert result.returncode == 2 and not out.exists()
    assert "retrying" not in result.stdout
    line = result.stderr.strip()
    assert "\n" not in line and "host name lookup failed" in line
    assert "dataset.source: local" in line


def test_backbone_weights_with_unresolvable_proxy_fail_at_once(tmp_path):
    """Offline (the issue: 5 tries of a DNS failure, ~70 s): one line, no retry. The proxy
    name makes the lookup fail here whatever the network, so nothing is downloaded."""
    out = tmp_path / "w.pth"
    result = run_cli(
        "obtain", "weights", "--model", "lraspp_mobilenet_v3_large", "--out", out,
        "--backoff", "30", check=False,
        env={"https_proxy": "http://proxy.invalid:3128", "http_proxy": "http://proxy.invalid:3128"},
    )  # fmt: skip
    assert result.returncode == 2 and not out.exists()
    assert "retrying" not in result.stdout
    line = result.stderr.strip()
    assert "\n" not in line and "host name lookup failed" in line
    assert "model.backbone_weights" in line


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1:1/a b?token=SECRET", "spaces or control characters"),
        ("http://127.0.0.1:99999/a?token=SECRET", "not a valid URL (Port out of range"),
        ("http://[::1/a?token=SECRET", "not a valid URL (Invalid IPv6 URL)"),
        ("ftp://127.0.0.1/a?token=SECRET", "'ftp://127.0.0.1/a?<redacted>' is not an http(s) URL"),
    ],
)
def test_bad_urls_are_one_line_without_their_token(tmp_path, url, fragment):
    result, out = fetch(tmp_path, url)
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr
    assert "SECRET" not in result.stdout + result.stderr


LOGIN_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>...</body></html>"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html; charset=utf-8", LOGIN_PAGE),
        ("application/xhtml+xml", LOGIN_PAGE),
        (None, b"\xef\xbb\xbf  \n<html lang='en'><body>Log in</body></html>"),  # sniffed
        ("application/octet-stream", b"\n\n<!doctype HTML><title>SSO</title>"),  # a lying type
    ],
    ids=["html", "xhtml", "untyped", "mistyped"],
)
def test_a_web_page_instead_of_the_archive_is_named_and_not_saved(
    tmp_path, server, content_type, body
):
    """A login page answered with 200 (an expired signed link, a portal): one line saying the
    server sent a web page and where (the redirect's target, redacted); nothing is kept."""
    Handler.files["/sso/login"] = body
    if content_type:
        Handler.types["/sso/login"] = content_type
    Handler.redirects = {"/data/CamVid.tar.gz": f"{server}/sso/login?next=SECRET1"}
    result, _ = fetch(tmp_path, f"{server}/data/CamVid.tar.gz?token=SECRET2", "--retries", "3")
    assert_one_line_error(result, "sent a web page")
    assert f"from {server}/sso/login?<redacted>" in result.stderr
    assert f"{server}/data/CamVid.tar.gz?<redacted>" in result.stderr
    assert "SECRET" not in result.stdout + result.stderr
    assert "retrying" not in result.stdout  # asking again brings the same page
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_html_file_as_the_archive_is_still_downloaded_when_it_is_the_archive(tmp_path, server):
    """Only the answer's start and type decide: an archive whose bytes merely hold "<html"
    later on is the archive."""
    Handler.files["/CamVid.tar.gz"] = PAYLOAD + b"<html>"
    Handler.types["/CamVid.tar.gz"] = "application/gzip"
    result, out = fetch(tmp_path, f"{server}/CamVid.tar.gz")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == PAYLOAD + b"<html>"
