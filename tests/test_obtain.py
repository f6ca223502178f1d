"""Obtaining the archive: a real HTTP server on 127.0.0.1, stand-in dataset CLIs on PATH."""

import hashlib
import http.server
import json
import os
import stat
import sys
import threading
import typing
from pathlib import Path

import pytest
import yaml
from conftest import TINY, run_cli, snakemake

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Handler(http.server.BaseHTTPRequestHandler):
    drops_left = 0  # responses cut off half-way before the server behaves
    requests: typing.ClassVar[list] = []

    files: typing.ClassVar[dict] = {}  # extra paths served whole

    def do_GET(self):
        Handler.requests.append(self.headers.get("Range"))
        if self.path in Handler.files:
            body = Handler.files[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path != "/CamVid.tar.gz":
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
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
    Handler.requests, Handler.drops_left, Handler.files = [], 0, {}
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
    assert "(100.0 %)" in result.stdout  # progress lines


def test_dropped_connection_resumes_with_range(tmp_path, server):
    Handler.drops_left = 2
    result, out = fetch(tmp_path, f"{server}/CamVid.tar.gz")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == PAYLOAD
    assert Handler.requests[0] is None
    assert Handler.requests[1] == f"bytes={len(PAYLOAD) // 2}-"  # resumed, not restarted
    assert "resuming at" in result.stdout and "retrying in" in result.stdout


def test_interrupted_download_is_resumed_by_the_next_run(tmp_path, server):
    (tmp_path / "CamVid.tar.gz.part").write_bytes(PAYLOAD[:1000])  # left by a killed run
    result, out = fetch(tmp_path, f"{server}/CamVid.tar.gz")
    assert result.returncode == 0 and out.read_bytes() == PAYLOAD
    assert Handler.requests == ["bytes=1000-"]


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
    assert "HTTP 404" in result.stderr and len(Handler.requests) == 1  # 404 is not retried


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
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: `") and f"failed (exit 1: {message})" in last
    assert hint in last and "dataset.source: local" in last
    assert not (tmp_path / "x.tar.gz").exists()


def test_missing_cli_says_what_to_do(tmp_path):
    env = {"PATH": str(Path(sys.executable).parent)}
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


def test_backbone_weights_offline_is_one_line(tmp_path):
    # No network here: the real torchvision URL fails, with a way out.
    out = tmp_path / "w.pth"
    result = run_cli(
        "obtain",
        "weights",
        "--model",
        "lraspp_mobilenet_v3_large",
        "--out",
        out,
        "--retries",
        "2",
        "--backoff",
        "0.05",
        check=False,
        env={"https_proxy": "http://127.0.0.1:9"},
    )
    assert result.returncode == 2 and not out.exists()
    line = result.stderr.strip()
    assert "\n" not in line and "model.backbone_weights" in line


@pytest.mark.parametrize("route", ["url", "local"])
def test_workflow_takes_the_archive_by_url_or_local_path(tmp_path, server, sample_archive, route):
    data = sample_archive.read_bytes()
    Handler.files = {"/mirror/CamVid.tgz": data}
    dataset = {
        "url": {
            "source": "url",
            "url": f"{server}/mirror/CamVid.tgz",
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
