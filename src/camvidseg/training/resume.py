"""How a training run is saved and picked up again, exactly (the train stage's MMEngine parts).

**Exact resume.** A run resumed from any of its checkpoints (an epoch's end, or the iteration where
a signal stopped it) trains on the same batches with the same random draws as a run that never
stopped, so on the CPU it ends with bitwise-identical weights and the same history:
- sample order: MMEngine's ``DefaultSampler`` shuffles from (seed, epoch) alone;
- augmentation: each sample's draws are seeded from (seed, epoch, index) (``SeededSampler`` hands
  the dataset those keys, ``SeededSamples`` seeds from them), whichever loader worker reads it;
- dropout and anything else drawn in a training step: the global generators are reseeded from
  (seed, iteration, rank) before every iteration (``IterationSeedHook``);
- weights, optimizer moments, LR schedule, BatchNorm statistics, the loss-smoothing windows and the
  best score so far come from the checkpoint (MMEngine's resume);
- part-way through an epoch, ``ResumableEpochLoop`` skips the batches the checkpoint already
  trained, and a run stopped during an epoch's validation (which follows that epoch's checkpoint)
  validates that epoch again.
On CUDA the same holds up to the kernels' own nondeterminism (cuDNN algorithm choice and atomics);
``train.deterministic`` asks torch for deterministic kernels (see the README).

**Safe files.** Every checkpoint and the best checkpoint are written to a temporary file in the
same folder and renamed into place, so a kill never leaves a truncated file under a checkpoint's
name; an unreadable checkpoint (from an older version, or a disk problem) is skipped with a one-line
warning and the newest readable one is used. MMEngine's ``last_checkpoint`` pointer is left as
MMEngine writes it: nothing here reads it (checkpoints are found by name).

**Attempts.** Each run of the job (the first and every resume) keeps its wall time and the
iterations it trained in ``<work dir>/attempts/<its timestamp>.json`` (``AttemptClockHook``), so
the time of a training counts every attempt, not only the last job's.

**Signals.** SIGUSR1 or SIGTERM (a scheduler's notice before preemption or the time limit) lets the
current iteration finish, saves ``iter_N.pth`` and exits with 128 + the signal number, so a retry
resumes from that iteration.

**MMEngine internals.** This is the one module that reaches past MMEngine's documented interface
(``EpochBasedTrainLoop``'s private counters ``_epoch``, ``_iter``, ``_max_epochs`` and
``_decide_current_val_interval``), written against the pinned ``mmengine-lite`` version
``MMENGINE_VERSION`` (requirements.txt, envs/camvidseg.yaml); a test checks the pin.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import signal
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from mmengine.dataset import DefaultSampler
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.runner import CheckpointLoader, EpochBasedTrainLoop
from torch.utils.data import Dataset

from ..core.errors import UserError
from ..core.fileio import atomic_path, read_json, write_json
from .async_steps import flush_losses

MMENGINE_VERSION = "0.10.7"  # the release whose internals ResumableEpochLoop relies on
TRUSTED_PREFIX = "camvidseg-workdir://"  # MMEngine checkpoint scheme for our own work dir
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend, writing through a temporary sibling and a rename."""

    def put(self, obj: bytes, filepath) -> None:
        with atomic_path(filepath) as tmp:
            tmp.write_bytes(obj)

    def put_text(self, obj: str, filepath, encoding: str = "utf-8") -> None:
        with atomic_path(filepath) as tmp:
            tmp.write_text(obj, encoding=encoding)


register_backend("camvidseg_atomic", AtomicLocalBackend, force=True)
ATOMIC_WRITES = {"backend": "camvidseg_atomic"}  # backend_args for CheckpointHook and saves


def load_trusted(path: Path | str, work_dir: Path, map_location=None):
    """Unpickle a full checkpoint (MMEngine's HistoryBuffer, numpy: unpickling may run code) that
    lies inside ``work_dir``, this run's own work folder under results/train_work/, and nothing
    else. The one place the package loads a file with ``weights_only=False``: every other file
    (user weights, best.pth) is read weights-only (README: "Which folders must be trusted")."""
    root, path = work_dir.resolve(), Path(path).resolve()
    if root not in path.parents:
        raise UserError(f"{path}: refusing to unpickle a checkpoint outside {root}")
    return torch.load(path, map_location=map_location, weights_only=False)


def register_trusted_loader(work_dir: Path) -> None:
    """Let MMEngine resume from full checkpoints of our work dir only (:func:`load_trusted`).

    torch >= 2.6 loads ``weights_only`` by default, which breaks MMEngine's resume; we opt out
    deliberately for files this program wrote, and for nothing else.
    """

    def load(filename: str, map_location=None):
        return load_trusted(filename.removeprefix(TRUSTED_PREFIX), work_dir, map_location)

    CheckpointLoader.register_scheme(TRUSTED_PREFIX, load, force=True)


def checkpoints(work_dir: Path, iters_per_epoch: int) -> list[tuple[int, Path]]:
    """(iteration, path) of the resumable checkpoints, oldest first, found by name (MMEngine's
    ``last_checkpoint`` holds an absolute path, which breaks when the project moves):
    ``epoch_N.pth`` ends iteration ``N * iters_per_epoch``, ``iter_N.pth`` iteration N."""
    found = []
    for path in work_dir.glob("*.pth"):
        if match := re.fullmatch(r"epoch_(\d+)\.pth", path.name):
            found.append((int(match[1]) * iters_per_epoch, path))
        elif match := re.fullmatch(r"iter_(\d+)\.pth", path.name):
            found.append((int(match[1]), path))
    return sorted(found)


def unreadable(path: Path) -> str | None:
    """Why a checkpoint cannot be read (a torch zip archive checked member by member), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            corrupt = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return str(err) or type(err).__name__
    return f"member {corrupt} is corrupt" if corrupt else None


def newest_readable_checkpoint(work_dir: Path, iters_per_epoch: int) -> Path | None:
    """The checkpoint to resume from: the newest one that reads, warning about each skipped."""
    for _, path in reversed(checkpoints(work_dir, iters_per_epoch)):
        problem = unreadable(path)
        if problem is None:
            return path
        print(f"warning: {path}: unreadable checkpoint skipped ({problem})", file=sys.stderr)
    return None


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that depends on ``parts`` alone."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device's generator


class SeededSampler(DefaultSampler):
    """``DefaultSampler`` yielding ``(seed, epoch, index)`` keys for ``SeededSamples``; ``skip``
    leaves out the first samples of an epoch (set by ``ResumableEpochLoop``)."""

    skip = 0

    def __iter__(self):
        for index in itertools.islice(super().__iter__(), self.skip, None):
            yield self.seed, self.epoch, index


class SeededSamples(Dataset):
    """A dataset read with ``(seed, epoch, index)`` keys: the random draws its transform makes
    derive from the key alone."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.metainfo = getattr(dataset, "metainfo", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        seed_everything(derived_seed(*key))
        return self.dataset[key[2]]


class IterationSeedHook(Hook):
    """Reseeds the global generators from (seed, iteration, rank) before every training step."""

    priority = "VERY_HIGH"

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        rank = dist.get_rank() if dist.is_initialized() else 0
        seed_everything(derived_seed(runner.seed, runner.iter, rank))


class ResumableEpochLoop(EpochBasedTrainLoop):
    """MMEngine's epoch loop, resumable part-way through an epoch and before a validation."""

    def run(self) -> torch.nn.Module:
        self.runner.call_hook("before_train")
        if self.resumed_before_validation():
            self.runner.val_loop.run()
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if self.validation_due():
                self.runner.val_loop.run()
        self.runner.call_hook("after_train")
        return self.runner.model

    def validation_due(self) -> bool:
        return (
            self.runner.val_loop is not None
            and self._epoch >= self.val_begin
            and (self._epoch % self.val_interval == 0 or self._epoch == self._max_epochs)
        )

    def resumed_before_validation(self) -> bool:
        """An epoch's checkpoint is written before its validation: a run stopped in between
        neither logged that validation nor kept its best checkpoint."""
        at_epoch_end = self._iter == self._epoch * len(self.dataloader)
        return self._epoch > 0 and at_epoch_end and self.validation_due()

    def run_epoch(self) -> None:
        done = self._iter - self._epoch * len(self.dataloader)  # trained before a resume
        self.dataloader.sampler.skip = done * self.dataloader.batch_size
        self.runner.call_hook("before_train_epoch")
        self.runner.model.train()
        for idx, data_batch in enumerate(self.dataloader, start=done):
            self.run_iter(idx, data_batch)
        self.dataloader.sampler.skip = 0
        self.runner.call_hook("after_train_epoch")
        self._epoch += 1


class AttemptClockHook(Hook):
    """Writes this attempt's wall time (since ``started``, the process's start) and iterations to
    ``<work dir>/attempts/<timestamp>.json``: every 10 s while it trains (a killed attempt loses
    at most that) and at its end. Rank 0 only."""

    EVERY_S = 10.0

    def __init__(self, started: float):
        self.started = started
        self.first_iter = 0
        self.written = 0.0

    def before_train(self, runner) -> None:
        self.first_iter = runner.iter

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if time.time() - self.written >= self.EVERY_S:
            self.write(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        self.write(runner, runner.iter)

    def write(self, runner, last_iter: int) -> None:
        if runner.rank != 0:
            return
        self.written = time.time()
        record = {"started": runner.timestamp, "seconds": round(self.written - self.started, 2),
                  "first_iter": self.first_iter, "last_iter": last_iter}  # fmt: skip
        write_json(Path(runner.work_dir) / "attempts" / f"{runner.timestamp}.json", record)


def attempts(work_dir: Path) -> list[dict]:
    """Every attempt's record in ``work_dir``, oldest first."""
    return [read_json(p) for p in sorted((work_dir / "attempts").glob("*.json"))]


class SignalCheckpointHook(Hook):
    """On SIGUSR1/SIGTERM: save ``iter_N.pth`` after the current iteration, then exit 128 + signal.

    The lowest priority runs it after the LR scheduler and the logger, so the checkpoint holds
    exactly the state the next iteration would start from. Under DDP the ranks agree on the stop
    (one all-reduce per iteration) and wait for rank 0's file before exiting.
    """

    priority = "LOWEST"

    def __init__(self):
        self.received = 0
        self.previous = {}

    def before_train(self, runner) -> None:
        self.previous = {signum: signal.signal(signum, self.note) for signum in STOP_SIGNALS}

    def note(self, signum: int, frame) -> None:
        self.received = signum

    def after_train(self, runner) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        signum = self.agreed_signal()
        if not signum:
            return
        name = f"iter_{runner.iter + 1}.pth"
        flush_losses(runner)  # the checkpoint's message hub holds every loss up to here
        runner.save_checkpoint(runner.work_dir, name, by_epoch=False, backend_args=ATOMIC_WRITES)
        for hook in runner.hooks:  # this attempt's time up to here: after_train never comes
            if isinstance(hook, AttemptClockHook):
                hook.write(runner, runner.iter + 1)
        if dist.is_initialized():
            dist.barrier()
        print(
            f"stopped by {signal.Signals(signum).name} after iteration {runner.iter + 1}: saved "
            f"{name}; run again to resume from it",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(128 + signum)

    def agreed_signal(self) -> int:
        if not dist.is_initialized():
            return self.received
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([self.received], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def after_train_epoch(self, runner) -> None:
        """The epoch's checkpoint (saved just before, by the CheckpointHook) supersedes the
        checkpoints a signal left during it."""
        if runner.rank == 0:
            for path in Path(runner.work_dir).glob("iter_*.pth"):
                path.unlink(missing_ok=True)
