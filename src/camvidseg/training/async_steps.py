"""Training steps that never wait for the GPU: bf16 autocast without a loss scaler, and the losses
read to the host once per log interval instead of once per iteration.

MMEngine's ``AmpOptimWrapper`` keeps a ``GradScaler`` whatever the dtype; under bf16 (fp32's
exponent range: nothing underflows) it only costs, and its ``step`` reads ``found_inf`` to the host,
which stalls the CPU until the GPU has finished the step. ``AutocastOptimWrapper`` is the plain
wrapper plus autocast; fp16 keeps MMEngine's wrapper and its scaler (it needs one).

MMEngine's ``RuntimeInfoHook`` reads every loss with ``.item()``, another stall per iteration.
``DeferredLossHook`` keeps them on the device and copies them in one transfer at every iteration the
logger prints (every ``log_interval`` of the epoch and its last), before the logger, the progress
line and the epoch's checkpoint read them; a signal's checkpoint flushes first (``flush_losses``).
The message hub then holds exactly the values, in the order, it would have held: logs, history and
an exact resume are unchanged. A loss that is not finite stops training there, in one line: every
later step would only spread the NaN through the weights.
"""

from __future__ import annotations

import contextlib
import math

import torch
from mmengine.hooks import RuntimeInfoHook
from mmengine.optim import OptimWrapper

from ..core.errors import UserError


class AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward runs under autocast in ``dtype`` (no loss scaling)."""

    def __init__(self, dtype: str, **kwargs):
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, dtype)

    @contextlib.contextmanager
    def optim_context(self, model: torch.nn.Module):
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device, dtype=self.cast_dtype):
            yield


class DeferredLossHook(RuntimeInfoHook):
    """``RuntimeInfoHook`` (it replaces the default one) that defers reading the losses; see the
    module's docstring."""

    def __init__(self, interval: int):
        super().__init__()
        self.interval = interval
        self.pending: list[dict] = []

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if outputs:
            self.pending.append({key: value.detach() if isinstance(value, torch.Tensor) else value
                                 for key, value in outputs.items()})  # fmt: skip
        last = self.end_of_epoch(runner.train_dataloader, batch_idx)
        if last or self.every_n_inner_iters(batch_idx, self.interval):
            self.flush(runner)

    def flush(self, runner) -> None:
        """Every pending loss into the message hub, copied to the host in one transfer."""
        if not self.pending:
            return
        keys = list(self.pending[0])
        values = [step[key] for step in self.pending for key in keys]
        device = next((v.device for v in values if isinstance(v, torch.Tensor)), None)
        # float64 holds every float32/bf16/fp16 value exactly: the same numbers .item() gives.
        flat = torch.stack([torch.as_tensor(v, device=device).reshape(()).double() for v in values])
        rows = flat.view(len(self.pending), len(keys)).tolist()
        self.pending.clear()
        for done, row in enumerate(rows, start=runner.iter + 2 - len(rows)):
            for key, value in zip(keys, row, strict=True):
                if not math.isfinite(value):
                    raise UserError(
                        f"train: {key} {value} at iteration {done}: training diverged (lower "
                        "train.lr) or its labels hold no class"
                    )
                runner.message_hub.update_scalar(f"train/{key}", value)


def flush_losses(runner) -> None:
    """Bring the message hub up to date before a checkpoint outside the epoch's end."""
    for hook in runner.hooks:
        if isinstance(hook, DeferredLossHook):
            hook.flush(runner)
