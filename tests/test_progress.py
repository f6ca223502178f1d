"""Long stages show one updating progress line on the terminal; the detail goes to the log."""

import io
import json
import re
import subprocess
import sys

import pytest
import rich.console
from conftest import REPO, run_cli, run_in_terminal, snakemake_call

from camvidseg.core import progress
from camvidseg.core.progress import Progress

REDRAW = "\r\x1b[2K"  # back to the line's start, erase it: the line is rewritten in place
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
COLOR = re.compile(r"\x1b\[[0-9;]*m")


def frames(shown: str) -> list[str]:
    """The successive states of the progress line on a terminal, colors removed."""
    assert shown.startswith(HIDE_CURSOR) and shown.endswith(SHOW_CURSOR), repr(shown)
    return COLOR.sub("", shown.removeprefix(HIDE_CURSOR).removesuffix(SHOW_CURSOR)).split(REDRAW)


def test_one_updating_line_with_percent_and_eta_and_tenths_in_the_log(monkeypatch):
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)  # draw every step, not every 0.5 s
    terminal, log = io.StringIO(), io.StringIO()
    with Progress("convert", 50, "masks", terminal=terminal, log=log) as bar:
        for _ in range(50):
            bar.advance()
    shown = frames(terminal.getvalue())
    assert "".join(shown).count("\n") == 1 and shown[-1].endswith("\n")  # one line
    assert len(shown) == 52  # the start, every step, the end
    assert re.fullmatch(r"convert: 25/50 masks  50% ETA 0:0\d", shown[25])
    assert re.fullmatch(r"convert: 50/50 masks 100% in 0:0\d\n", shown[-1])
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and re.fullmatch(r"convert:  5/50 masks  10% ETA 0:0\d", lines[0])
    assert lines[-1].startswith("convert: 50/50 masks 100% in ")
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()


def test_amounts_in_bigger_units_and_resumed_work_left_out_of_the_rate(monkeypatch):
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)
    now = [0.0]
    monkeypatch.setattr(rich.console, "monotonic", lambda: now[0])  # rich's clock
    terminal = io.StringIO()
    bar = Progress("download", 4 * 2**20, "bytes", already=3 * 2**20, terminal=terminal, log=False)
    for second in (10, 20, 30):
        now[0] = second
        bar.advance(2**17, note="from mirror")
    bar.close()
    shown = frames(terminal.getvalue())
    assert shown[0] == "download: 3.0/4.0 MiB  75%"  # no rate yet: no ETA
    # 128 KiB per 10 s in this run, 640 KiB to go: 50 s (the resumed 3 MiB would make it 2 s)
    assert shown[3] == "download: 3.4/4.0 MiB  84% from mirror ETA 0:50"
    assert shown[-1] == "download: 3.4/4.0 MiB  84% from mirror in 0:30\n"


def test_a_failed_stage_leaves_its_last_state_without_a_duration():
    terminal, log = io.StringIO(), io.StringIO()
    with pytest.raises(ValueError), Progress("predict", 4, "images", terminal=terminal,
                                             log=log) as bar:  # fmt: skip
        bar.advance()
        raise ValueError
    assert frames(terminal.getvalue())[-1] == "predict: 1/4 images  25%\n"
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
    assert re.fullmatch(r"convert: 8/8 masks 100% in \d+:\d\d\n", frames(shown)[-1])
    assert re.fullmatch(r"convert: 8/8 masks 100% in \d+:\d\d", log.read_text().splitlines()[-1])


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
    assert re.search(r"^convert: 8/8 masks 100% in \d+:\d\d$", text, re.M) and "\x1b" not in text


@pytest.mark.slow
def test_snakemake_in_a_terminal_shows_progress_lines_and_keeps_mmengine_in_the_log(tmp_path):
    # every stage with a progress line; not export, plots and records (they have none)
    targets = ("results/vis_data", "results/metrics/val.json", "results/metrics/test.json")
    command, env = snakemake_call(tmp_path, *targets)
    code, shown = run_in_terminal(command, env=env, cwd=tmp_path)
    (tmp_path / "terminal.txt").write_text(shown)  # what the user saw, for a failing test
    assert code == 0, shown
    plain = COLOR.sub("", shown.replace(HIDE_CURSOR, "").replace(SHOW_CURSOR, ""))
    lines = [frame.split(REDRAW)[-1] for frame in plain.split("\n")]
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
    last = json.loads((tmp_path / "results/model/history.json").read_text())["val"][-1]
    assert last["epoch"] == 2 and f"val mIoU {last['mIoU']:.3f}," in finals["train"]
    # MMEngine's environment dump, hook table and log lines stay in the rule's log.
    assert "mmengine" not in shown and "System environment" not in shown
    log = (tmp_path / "results/logs/train.log").read_text()
    assert "System environment" in log and "Hooks will be executed" in log


def test_training_line_ends_on_the_last_validation_not_the_one_before():
    """Training ends with a validation: the line shows its score, not the previous epoch's."""
    from types import SimpleNamespace

    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("test_training_line")
    runner = SimpleNamespace(rank=0, max_iters=2, iter=0, epoch=0, max_epochs=2, message_hub=hub)
    hook = progress.training_hook()
    hook.before_train(runner)
    for epoch, (loss, score) in enumerate([(0.9, 0.25), (0.4, 0.75)]):
        runner.epoch = epoch
        hub.update_scalar("train/loss", loss)
        hook.after_train_iter(runner, 0)
        hub.update_info("best_score", score)
        hub.update_info("best_ckpt", f"work/epoch_{epoch + 1}.pth")
        hook.after_val_epoch(runner, {"mIoU": score})
    line = hook.progress.line()
    hook.after_train(runner)
    assert "epoch 2/2  loss 0.400  val mIoU 0.750, best 0.750 (epoch 2, kept)" in line, line
