"""A signed dataset URL's token is written nowhere: a whole real run (archive served on 127.0.0.1
under a signed URL), Snakemake's report, and every command line while the run lives."""

import hashlib
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY, ArchiveHandler, archive_server, snakemake, snakemake_call, sources_stable

SECRET = "SIGNATURE0x5eCRet"  # the token, as a signed URL's query carries it


@pytest.fixture
def signed_url(sample_archive):
    ArchiveHandler.payload = sample_archive.read_bytes()
    with archive_server() as base:
        yield (
            f"{base}/bucket/CamVid.tar.gz"
            f"?X-Amz-Credential=AKIA{SECRET}&X-Amz-Signature={SECRET}#frag{SECRET}"
        )


def command_lines() -> list[str]:
    """Every process's command line on the machine now."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue  # ended meanwhile
    return lines


def signed_config(tmp_path, url: str, checksum: bool):
    config = yaml.safe_load(TINY.read_text())
    config["dataset"] = {"source": "url", "url": url}
    if checksum:
        config["dataset"]["sha256"] = hashlib.sha256(ArchiveHandler.payload).hexdigest()
    config["train"]["epochs"] = 1
    config_file = tmp_path / "config.yaml"  # the user's own file, outside the project
    config_file.write_text(yaml.safe_dump(config))
    return config_file


@pytest.mark.parametrize("checksum", [True, False], ids=["with-sha256", "without-sha256"])
def test_no_planned_command_holds_the_token(tmp_path, signed_url, checksum):
    """Every job's command as Snakemake would run it (the model card's settings included), and
    whatever reading the workflow writes."""
    config_file = signed_config(tmp_path, signed_url, checksum)
    workdir = tmp_path / "project"
    planned = snakemake(workdir, "-n", "-p", "--forceall", configfile=config_file)
    commands = re.findall(r"^Shell command: (.*)$", planned.stdout, re.M)
    assert any("camvidseg card" in c for c in commands)
    assert any("camvidseg obtain url" in c for c in commands)
    assert SECRET not in planned.stdout + planned.stderr
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert (workdir / "results/data/source.json") in files
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []


@pytest.mark.slow
def test_signed_url_token_is_in_no_file_and_on_no_command_line(tmp_path, signed_url):
    config_file = signed_config(tmp_path, signed_url, checksum=False)
    workdir = tmp_path / "project"
    command, env = snakemake_call(workdir, configfile=config_file)
    seen = []
    with sources_stable():
        run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        reader = threading.Thread(target=lambda: seen.append(run.stdout.read()), daemon=True)
        reader.start()
        leaked_commands = set()
        while run.poll() is None:
            leaked_commands.update(c for c in command_lines() if SECRET in c)
            time.sleep(0.05)
        reader.join()
    output = seen[0].decode(errors="replace")
    assert run.returncode == 0, output
    assert leaked_commands == set()
    assert SECRET not in output
    report = snakemake(workdir, "--report", workdir / "report.zip", configfile=config_file)
    assert SECRET not in report.stdout + report.stderr
    assert (workdir / "results/model/MODEL_CARD.md").is_file()
    assert (workdir / "results/provenance.json").is_file()
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert any(".snakemake" in p.parts and "metadata" in p.parts for p in files)
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []
    # The report is a zip of compressed pages: look inside it too.
    import zipfile

    with zipfile.ZipFile(workdir / "report.zip") as report_zip:
        inside = [n for n in report_zip.namelist() if SECRET.encode() in report_zip.read(n)]
    assert inside == []
    # Where the URL is shown, it is shown redacted (host and path, so the user knows which).
    card = (workdir / "results/model/MODEL_CARD.md").read_text()
    assert "127.0.0.1" not in card or "<redacted>" in card
