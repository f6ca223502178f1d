"""Long stages show one updating progress line on the terminal; the detail goes to the log."""

import io
import json
import re
import subprocess
import sys

import pytest
from conftest import REPO, run_cli, run_in_terminal, snakemake_call

from camvidseg.core import progress
from camvidseg.core.progress import Progress

REDRAW = "\r\x1b[K"


def test_one_updating_line_with_percent_and_eta_and_tenths_in_the_log(monkeypatch):
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)  # draw every step, not every 0.2 s
    terminal, log = io.StringIO(), io.StringIO()
    with Progress("convert", 50, "masks", terminal=terminal, log=log) as bar:
        for _ in range(50):
            bar.advance()
    shown = terminal.getvalue()
    assert shown.count("\n") == 1 and shown.endswith("\n")  # one line, rewritten in place
    frames = shown.split(REDRAW)[1:]
    assert len(frames) == 51
    assert frames[24].startswith("convert: 25/50 masks  50%  ETA 0:0")
    assert frames[-1].startswith("convert: 50/50 masks 100% in 0:0")
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and lines[0] == "convert: 5/50 masks  10%"
    assert lines[-1].startswith("convert: 50/50 masks 100% in ")
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()


def test_amounts_in_bigger_units_and_resumed_work_left_out_of_the_rate(monkeypatch):
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)
    terminal = io.StringIO()
    bar = Progress("download", 4 * 2**20, "bytes", already=3 * 2**20, terminal=terminal, log=False)
    bar.advance(2**19, note="from mirror")
    bar.close()
    frames = terminal.getvalue().split(REDRAW)[1:]
    assert frames[0].startswith("download: 3.5/4.0 MiB  88%  ETA 0:00  from mirror")
    assert frames[-1].startswith("download: 3.5/4.0 MiB  88%  from mirror in")


def test_a_failed_stage_leaves_its_last_state_without_a_duration():
    terminal, log = io.StringIO(), io.StringIO()
    with pytest.raises(ValueError), Progress("predict", 4, "images", terminal=terminal,
                                             log=log) as bar:  # fmt: skip
        bar.advance()
        raise ValueError
    assert terminal.getvalue() == f"{REDRAW}predict: 1/4 images  25%\n"
    assert log.getvalue() == "predict: 1/4 images  25%\n"


@pytest.fixture
def indexed_sample(sample_archive, tmp_path):
    manifest, palette = tmp_path / "dataset.json", tmp_path / "palette.json"
    run_cli(
        "extract", "--archive", sample_archive, "--dest", tmp_path / "x", "--manifest", manifest
    )
    run_cli("palette", "--manifest", manifest, "--out", palette)
    return manifest, palette


def convert_command(manifest, palette, out, log):
    return (
        f"{sys.executable} -m camvidseg convert --manifest {manifest} --palette {palette}"
        f" --out {out} --threads 2 > {log} 2>&1"
    )


def test_a_stage_run_as_a_rule_runs_it_shows_progress_on_the_terminal_detail_in_the_log(
    indexed_sample, tmp_path
):
    manifest, palette = indexed_sample
    log = tmp_path / "convert.log"
    # As a rule runs it: stdout and stderr into the log, inside a terminal session.
    command = convert_command(manifest, palette, tmp_path / "out", log)
    code, shown = run_in_terminal(["bash", "-c", command], env={"PYTHONPATH": str(REPO / "src")})
    assert code == 0, shown
    assert shown == f"{REDRAW}convert: 8/8 masks 100% in 0:00\n"
    assert log.read_text().splitlines()[-1] == "convert: 8/8 masks 100% in 0:00"


def test_without_a_terminal_only_the_log_gets_lines(indexed_sample, tmp_path):
    manifest, palette = indexed_sample
    log = tmp_path / "convert.log"
    command = convert_command(manifest, palette, tmp_path / "out", log)
    # A batch job (SLURM, CI): a new session has no controlling terminal.
    result = subprocess.run(
        ["bash", "-c", command],
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
        start_new_session=True,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stdout == result.stderr == ""
    text = log.read_text()
    assert "convert: 8/8 masks 100% in 0:00" in text and "\x1b" not in text


@pytest.mark.slow
def test_snakemake_in_a_terminal_shows_progress_lines_and_keeps_mmengine_in_the_log(tmp_path):
    # every stage with a progress line; not export, plots and records (they have none)
    targets = ("results/vis_data", "results/metrics/val.json", "results/metrics/test.json")
    command, env = snakemake_call(tmp_path, *targets)
    code, shown = run_in_terminal(command, env=env, cwd=tmp_path)
    (tmp_path / "terminal.txt").write_text(shown)  # what the user saw, for a failing test
    assert code == 0, shown
    lines = [frame.split(REDRAW)[-1] for frame in shown.split("\n")]
    finals = {line.split(":")[0]: line for line in lines if re.search(r" in \d+:\d\d$", line)}
    for stage, amount in (("convert", "10/10 masks"), ("train", "6/6 iters"),
                          ("evaluate val", "2/2 images"), ("evaluate test", "2/2 images"),
                          ("visualize", "2/2 images")):  # fmt: skip
        assert finals.get(stage, "").startswith(f"{stage}: {amount} 100%"), finals
    assert "epoch 2/2  loss " in finals["train"]
    # The last epoch's score and the best epoch's, whose checkpoint is the one evaluated.
    found = re.search(r"val mIoU \d\.\d{3}, best \d\.\d{3} \(epoch (\d+), kept\)", finals["train"])
    kept = json.loads((tmp_path / "results/metrics/val.json").read_text())["epoch"]
    assert found and int(found[1]) == kept, finals["train"]
    # MMEngine's environment dump, hook table and log lines stay in the rule's log.
    assert "mmengine" not in shown and "System environment" not in shown
    log = (tmp_path / "results/logs/train.log").read_text()
    assert "System environment" in log and "Hooks will be executed" in log
