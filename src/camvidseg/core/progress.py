"""One compact, updating progress line per long stage on the terminal; the detail in its log.

The rules send a stage's stdout and stderr to its log file, so the updating line goes to the
controlling terminal (``/dev/tty``) instead: whoever runs Snakemake (or a stage) in a terminal sees
one line per running stage, with count, percent and ETA, redrawn in place by ``rich`` and ended
with a newline when the stage is done; a batch job (SLURM, CI, cron) has no terminal and gets
nothing extra. The same line as plain text at every tenth of the work (and the final one) goes to
stdout, i.e. the log. When stdout is itself the terminal, only the updating line is written.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import TextIO

from rich import progress
from rich.console import Console
from rich.text import Text

REDRAW_SECONDS = 0.5  # terminal updates at most this often (a redraw costs a few ms)
LOG_STEPS = 10  # plain log lines per stage (one per tenth), plus the last
LOG_SECONDS = 30.0  # log interval when the total is unknown


def open_terminal() -> TextIO | None:
    """The controlling terminal for writing, or None in a batch job (no terminal)."""
    try:
        return open("/dev/tty", "w", buffering=1)
    except OSError:
        return None


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) of a duration."""
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Time(progress.ProgressColumn):
    """``ETA m:ss`` while running (the rate of this run's work only); ``in m:ss`` once done."""

    def render(self, task: progress.Task) -> Text:
        if task.fields["took"] is not None:
            return Text(f"in {clock(task.fields['took'])}")
        remaining = task.time_remaining
        return Text(f"ETA {clock(remaining)}" if remaining and not task.finished else "")


def columns(unit: str) -> tuple[progress.ProgressColumn, ...]:
    """label: amount, percent, note, time; bytes in KiB, MiB or GiB, whichever suits the total."""
    if unit == "bytes":
        amount = (progress.DownloadColumn(binary_units=True),)
    else:
        amount = (progress.MofNCompleteColumn(), progress.TextColumn(unit))
    note = progress.TextColumn("{task.fields[note]}")
    label = progress.TextColumn("{task.description}:")
    return (label, *amount, progress.TaskProgressColumn(), note, Time())


class Line(progress.Progress):
    """rich's progress display drawn as one line of text (its table costs 3x the time)."""

    def get_renderables(self):
        for task in self.tasks:
            yield Text(" ").join(filter(None, (column(task) for column in self.columns)))


class Progress:
    """Progress of ``total`` units of work (None: unknown), e.g. ``Progress("convert", 72,
    "masks")``; with unit ``"bytes"`` amounts show in KiB, MiB or GiB, whichever suits the total;
    ``already`` counts work done before (a resumed download), left out of the ETA's rate."""

    def __init__(
        self,
        label: str,
        total: float | None,
        unit: str = "",
        already: float = 0,
        terminal: TextIO | bool | None = True,
        log: TextIO | bool = True,
    ):
        self.terminal = open_terminal() if terminal is True else terminal or None
        self._owns_terminal = terminal is True and self.terminal is not None
        log = sys.stdout if log is True else log or None
        # Stdout on the terminal already shows the updating line: no second copy of the news.
        self.log = None if self.terminal is not None and _is_terminal(log) else log
        console = Console(file=self.terminal, force_terminal=True, width=_width(self.terminal))
        # Drawn when advance says so (no refresh thread: convert forks workers meanwhile);
        # stdout stays the log's, never redirected to the terminal.
        self.bar = Line(
            *columns(unit),
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            disable=self.terminal is None,
        )
        self.task = self.bar.add_task(label, total=total, completed=already, note="", took=None)
        self.bar.start()
        self.drawn_at = self.logged_at = time.monotonic()
        self.logged_steps, self.logged = 0, ""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(finished=kind is None)

    def advance(self, amount: float = 1, note: str | None = None) -> None:
        """``amount`` more units done; ``note`` (e.g. the loss) is shown after the numbers."""
        self.bar.update(self.task, advance=amount, **({} if note is None else {"note": note}))
        now = time.monotonic()
        if self.terminal is not None and now - self.drawn_at >= REDRAW_SECONDS:
            self.drawn_at = now
            self.bar.refresh()
        if self.log is not None and self._log_due(now):
            self._log(self.line())
            self.logged_at = now

    def _log_due(self, now: float) -> bool:
        task = self.bar.tasks[self.task]
        if not task.total:
            return now - self.logged_at >= LOG_SECONDS
        step = int(LOG_STEPS * task.completed / task.total)
        due = step > self.logged_steps and task.completed < task.total
        self.logged_steps = max(step, self.logged_steps)
        return due

    def close(self, finished: bool = True) -> None:
        """Last state: on the terminal, ended with a newline; in the log, one line."""
        if finished:
            self.bar.update(self.task, took=self.bar.tasks[self.task].elapsed or 0.0)
        self.bar.stop()
        if self._owns_terminal:
            self.terminal.close()
        self.terminal = None
        if self.log is not None and self.line() != self.logged:
            self._log(self.line())
        self.log = None

    def line(self) -> str:
        """The progress line as plain text (what the log gets)."""
        return next(self.bar.get_renderables()).plain

    def _log(self, text: str) -> None:
        print(text, file=self.log, flush=True)
        self.logged = text


def _width(terminal: TextIO | None) -> int:
    """The terminal's columns (a line longer than that would wrap), else room for any line (a
    terminal that never got a size says 0)."""
    try:
        return os.get_terminal_size(terminal.fileno()).columns or 200
    except (AttributeError, ValueError, OSError):
        return 200


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def training_hook():
    """An MMEngine hook that shows training as one updating line (iterations, epoch, loss, the
    last epoch's val mIoU and the best epoch's, whose checkpoint is the one kept, ETA) on rank 0;
    MMEngine's own log lines go to the rule's log only."""
    from mmengine.hooks import Hook  # only training has MMEngine loaded; the other stages never

    class TrainingProgress(Hook):
        priority = "VERY_LOW"

        def __init__(self):
            self.progress: Progress | None = None
            self.step = ""  # epoch and loss, from the last iteration
            self.val = ""

        def before_train(self, runner) -> None:
            if runner.rank == 0:
                # After a resume runner.iter counts the iterations done before: not in the rate.
                total = runner.max_iters
                self.progress = Progress("train", total, "iters", already=runner.iter, log=False)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if self.progress is not None:
                # The last loss read to the host (async_steps): reading this one would stall
                # the CPU until the GPU finishes the step.
                losses = runner.message_hub.log_scalars.get("train/loss")
                loss = losses.current() if losses is not None else float("nan")
                self.step = f"epoch {runner.epoch + 1}/{runner.max_epochs}  loss {loss:.3f}"
                self.progress.advance(1, note=self.step + self.val)

        def after_val_epoch(self, runner, metrics=None) -> None:
            if not (metrics and "mIoU" in metrics):
                return
            self.val = f"  val mIoU {metrics['mIoU']:.3f}"
            # The CheckpointHook (it runs first) keeps the best so far, across resumes too.
            best = runner.message_hub.get_info("best_score")
            found = re.search(r"epoch_(\d+)", str(runner.message_hub.get_info("best_ckpt")))
            if best is not None and found:
                self.val += f", best {best:.3f} (epoch {found[1]}, kept)"
            if self.progress is not None:  # shown now: the last epoch's validation ends training
                self.progress.advance(0, note=self.step + self.val)

        def after_train(self, runner) -> None:
            if self.progress is not None:
                self.progress.close()

    return TrainingProgress()
