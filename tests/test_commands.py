"""Every rule's command is one its stage's real argument parser accepts, with the optional settings
left empty or absent: the commands of a dry run (`snakemake -n -p`) are parsed by each
`python -m camvidseg <stage>` they hold (its parser, stopped once it has parsed the command), and
a URL source without a checksum downloads for real."""

import argparse
import contextlib
import io
import re
import shlex
import sys

import pytest
import yaml
from conftest import TINY, segnet_layout, snakemake
from PIL import Image
from test_workflow import shell_templates

STAGE = re.compile(r"camvidseg (\w+)")


def stage_calls(command: str) -> list[tuple[str, list[str]]]:
    """(stage, its arguments) of each `python -m camvidseg <stage>` in a shell command, up to the
    redirections; a wrapper's arguments end at its `--`."""
    tokens = shlex.split(command.split(" > ")[0])
    starts = [i for i in range(2, len(tokens)) if tokens[i - 2 : i] == ["-m", "camvidseg"]]
    calls = []
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(tokens)
        arguments = tokens[start + 1 : end]
        if arguments[-1:] == ["--"]:
            arguments = arguments[:-1]
        calls.append((tokens[start], arguments))
    return calls


def planned_commands(workdir, config: dict, tmp_path) -> list[str]:
    config_file = tmp_path / f"{workdir.name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "-p", "--forceall", configfile=config_file)
    return re.findall(r"^Shell command: (.*)$", result.stdout, re.M)


def assert_parsed(module: str, arguments: list[str], workdir, monkeypatch) -> None:
    """``python -m camvidseg``'s own entry point on the command, in this process, its stage's
    parser stopped right after parsing all of it: options, values, required arguments and
    unknown flags are checked (``--help`` appended would stop before the unknown flags)."""
    from camvidseg.__main__ import main

    def parse_then_stop(parser, args=None, namespace=None):
        _, unknown = parser.parse_known_args(args, namespace)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", ["camvidseg", module, *arguments])
    errors = io.StringIO()
    with (
        contextlib.chdir(workdir),
        contextlib.redirect_stderr(errors),
        pytest.raises(SystemExit) as exited,
    ):
        main()
    command = f"camvidseg {module} {shlex.join(arguments)}"
    assert exited.value.code == 0, f"{command}: {errors.getvalue()}"


def optional_settings_absent(tmp_path) -> dict[str, dict]:
    """Configs that leave every optional setting empty or out, one per dataset source."""
    folder = segnet_layout(tmp_path / "segnet")
    images = tmp_path / "new images"
    images.mkdir()
    Image.new("RGB", (8, 6)).save(images / "street.png")  # predict.input_dir needs an image
    tiny = yaml.safe_load(TINY.read_text())
    return {
        "url-only": {"dataset": {"source": "url", "url": "http://127.0.0.1:9/CamVid.zip?t=1"}},
        "url-empty-sha256": {
            "dataset": {"source": "url", "url": "http://127.0.0.1:9/a.tgz", "sha256": ""},
            "train": {"load_from": ""},
            "predict": {"input_dir": ""},
        },
        "folder-empty-lists-and-paths": {
            "dataset": {"source": "local", "path": str(folder), "ignore_classes": []},
            "model": {"backbone_weights": ""},
            "train": {"load_from": "", "device": "cpu"},
            "predict": {"input_dir": str(images)},
            "experiments": {"base": {}, "other": {"train": {"lr": 0.01}}},
        },
        "sample-empty-backbone": tiny | {"model": {"backbone_weights": ""}},
    }


@pytest.mark.slow
def test_every_rule_command_parses_with_optional_settings_left_empty(tmp_path, monkeypatch):
    seen = set()
    for name, config in optional_settings_absent(tmp_path).items():
        workdir = tmp_path / name
        commands = planned_commands(workdir, config, tmp_path)
        assert commands, name
        for command in commands:
            for module, arguments in stage_calls(command):
                assert_parsed(module, arguments, workdir, monkeypatch)
                seen.add(module)
    templated = {m for t in shell_templates().values() for m in STAGE.findall(t)}
    assert seen == templated, f"no command checked for {templated - seen}"


@pytest.mark.parametrize("sha256", [None, ""], ids=["absent", "empty"])
def test_url_without_checksum_downloads_and_extracts(tmp_path, sample_archive, sha256):
    import http.server
    import threading

    payload = sample_archive.read_bytes()

    class Archive(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Archive)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        dataset = {"source": "url", "url": f"http://127.0.0.1:{httpd.server_port}/CamVid.tgz"}
        if sha256 is not None:
            dataset["sha256"] = sha256
        config = yaml.safe_load(TINY.read_text()) | {"dataset": dataset}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        snakemake(tmp_path / "run", "--until", "extract", configfile=tmp_path / "config.yaml")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (tmp_path / "run/resources/CamVid.tar.gz").read_bytes() == payload
    log = (tmp_path / "run/results/logs/obtain_dataset.log").read_text()
    assert "sha256 verified" not in log and "obtained resources/CamVid.tar.gz" in log
