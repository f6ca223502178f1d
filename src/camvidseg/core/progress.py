"""One compact, updating progress line per long stage on the terminal; the detail in its log.

The rules send a stage's stdout and stderr to its log file, so the updating line goes to the
controlling terminal (``/dev/tty``) instead: whoever runs Snakemake (or a stage) in a terminal sees
one line per running stage, with count, percent and ETA, rewritten in place and ended with a
newline when the stage is done; a batch job (SLURM, CI, cron) has no terminal and gets nothing
extra. Plain lines at every tenth of the work (and the final one) go to stdout, i.e. the log.
When stdout is itself the terminal, only the updating line is written (the same news once).
"""

from __future__ import annotations

import re
import sys
import time
from typing import TextIO

REDRAW_SECONDS = 0.2  # terminal updates at most this often
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
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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
        self.label, self.total, self.unit, self.scale = label, total, unit, 1.0
        if unit == "bytes":
            self.unit, self.scale = _byte_unit(total or 0)
        self.done, self.already, self.note = float(already), float(already), ""
        self.start = self.drawn_at = self.logged_at = time.monotonic()
        self.terminal = open_terminal() if terminal is True else terminal or None
        self._owns_terminal = terminal is True and self.terminal is not None
        log = sys.stdout if log is True else log or None
        # Stdout on the terminal already shows the updating line: no second copy of the news.
        self.log = None if self.terminal is not None and _is_terminal(log) else log
        self.logged_steps, self.logged = 0, ""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(finished=kind is None)

    def advance(self, amount: float = 1, note: str | None = None) -> None:
        """``amount`` more units done; ``note`` (e.g. the loss) is shown after the numbers."""
        self.done += amount
        if note is not None:
            self.note = note
        now = time.monotonic()
        if self.terminal is not None and now - self.drawn_at >= REDRAW_SECONDS:
            self.drawn_at = now
            self._draw(self.line(now))
        if self.log is not None and self._log_due(now):
            self._log(self.line(now, eta=False))
            self.logged_at = now

    def _log_due(self, now: float) -> bool:
        if not self.total:
            return now - self.logged_at >= LOG_SECONDS
        step = int(LOG_STEPS * self.done / self.total)
        due = step > self.logged_steps and self.done < self.total
        self.logged_steps = max(step, self.logged_steps)
        return due

    def close(self, finished: bool = True) -> None:
        """Last state: on the terminal, ended with a newline; in the log, one line."""
        now = time.monotonic()
        final = self.line(now, eta=False) + (f" in {clock(now - self.start)}" if finished else "")
        if self.terminal is not None:
            self._draw(final + "\n")
            if self._owns_terminal:
                self.terminal.close()
            self.terminal = None
        if self.log is not None and final != self.logged:
            self._log(final)
        self.log = None

    def line(self, now: float, eta: bool = True) -> str:
        amount = self._amount(self.done)
        if self.total:
            share = min(self.done / self.total, 1.0)
            text = f"{self.label}: {amount}/{self._amount(self.total)} {self.unit} {share:4.0%}"
            new = self.done - self.already
            if eta and new > 0 and share < 1:
                remaining = (now - self.start) * (self.total - self.done) / new
                text += f"  ETA {clock(remaining)}"
        else:
            text = f"{self.label}: {amount} {self.unit}"
        return f"{text}  {self.note}".rstrip() if self.note else text

    def _log(self, text: str) -> None:
        print(text, file=self.log, flush=True)
        self.logged = text

    def _amount(self, value: float) -> str:
        return f"{value / self.scale:.1f}" if self.scale != 1 else f"{value:.0f}"

    def _draw(self, text: str) -> None:
        # Carriage return + erase to the end of the line: the line is rewritten in place.
        self.terminal.write("\r\x1b[K" + text)
        self.terminal.flush()


def _byte_unit(total: float) -> tuple[str, float]:
    for unit, scale in (("GiB", 2.0**30), ("MiB", 2.0**20)):
        if total >= scale:
            return unit, scale
    return "KiB", 2.0**10


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
            self.val = ""

        def before_train(self, runner) -> None:
            if runner.rank == 0:
                # After a resume runner.iter counts the iterations done before: not in the rate.
                total = runner.max_iters
                self.progress = Progress("train", total, "iters", already=runner.iter, log=False)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if self.progress is not None:
                value = (outputs or {}).get("loss", float("nan"))
                loss = float(value.detach() if hasattr(value, "detach") else value)  # no grad
                epoch = f"epoch {runner.epoch + 1}/{runner.max_epochs}"
                self.progress.advance(1, note=f"{epoch}  loss {loss:.3f}{self.val}")

        def after_val_epoch(self, runner, metrics=None) -> None:
            if not (metrics and "mIoU" in metrics):
                return
            self.val = f"  val mIoU {metrics['mIoU']:.3f}"
            # The CheckpointHook (it runs first) keeps the best so far, across resumes too.
            best = runner.message_hub.get_info("best_score")
            found = re.search(r"epoch_(\d+)", str(runner.message_hub.get_info("best_ckpt")))
            if best is not None and found:
                self.val += f", best {best:.3f} (epoch {found[1]}, kept)"

        def after_train(self, runner) -> None:
            if self.progress is not None:
                self.progress.close()

    return TrainingProgress()
