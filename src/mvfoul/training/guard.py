"""The divergence guard (``training.stop_on_divergence``, on by default).

A diverged run used to train on in NaN, keep NaN-weight checkpoints, rank one of them "best",
test it and exit 0. The guard stops it instead:

* the first non-finite training loss stops the run (checked after every step; under DDP the
  ranks agree first, so they all stop at the same step and none waits forever for the others);
* the weights are checked before every validation and before every ``last.ckpt`` (the optimiser
  step after the last finite loss of an epoch can still break them), so no checkpoint with
  non-finite weights is ever written, ranked or tested.

The stop is a :class:`~mvfoul.errors.DivergenceError`: one line naming the epoch and step, the
value and the keys to look at; the run's ``summary.json`` records it and the exit code is
non-zero. Under 16-bit mixed precision, non-finite *gradients* are normal (the gradient scaler
skips those steps); only the loss and the weights are checked.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from mvfoul.errors import DivergenceError


def _loss_of(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


def nonfinite_parameters(module: torch.nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or an infinity."""
    return [name for name, p in module.named_parameters() if not torch.isfinite(p).all()]


class DivergenceGuard(Callback):
    """Stops training at the first non-finite loss or weights (see the module docstring)."""

    def __init__(self, training: DictConfig, precision: str) -> None:
        self.learning_rate = training.learning_rate
        self.gradient_clip_val = training.gradient_clip_val
        self.precision = precision
        self.stop: dict[str, Any] | None = None  # what stopped the run (for summary.json)

    def _hint(self) -> str:
        clip = (
            f"lower training.gradient_clip_val (now {self.gradient_clip_val:g})"
            if self.gradient_clip_val
            else "set training.gradient_clip_val (now off), e.g. 1.0"
        )
        fixes = [f"lower training.learning_rate (now {self.learning_rate:g})", clip]
        if not str(self.precision).startswith(("32", "64")):
            fixes.append(f"train in system.precision=32-true (now {self.precision})")
        return f"{', '.join(fixes[:-1])} or {fixes[-1]}; training.stop_on_divergence=false trains on regardless"

    def _raise(self, trainer: L.Trainer, what: str, value: str) -> None:
        epoch, step = trainer.current_epoch, trainer.global_step
        message = (
            f"training diverged at epoch {epoch}, step {step}: {what} is {value}; {self._hint()}"
        )
        self.stop = {
            "reason": "diverged",
            "epoch": epoch,
            "step": step,
            "what": what,
            "value": value,
            "message": message,
        }
        raise DivergenceError(message)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = _loss_of(outputs)
        if loss is None:
            return
        finite = bool(torch.isfinite(loss.detach()).all())
        # Every rank must reach the same decision at the same step, or the others would wait in
        # the next all-reduce forever.
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):
            if finite:
                self._raise(trainer, "the training loss", "non-finite on another process")
            value = float(loss.detach().float().cpu().reshape(-1)[0]) if loss.numel() else math.nan
            self._raise(trainer, "the training loss", str(value))

    def _check_weights(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> None:
        broken = nonfinite_parameters(pl_module)
        if not trainer.strategy.reduce_boolean_decision(not broken, all=True):
            shown = ", ".join(broken[:3]) + (" ..." if len(broken) > 3 else "")
            self._raise(
                trainer,
                f"the weights {when} ({len(broken)} parameter tensor(s), e.g. {shown})",
                "non-finite",
            )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check_weights(trainer, pl_module, "before validation")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._check_weights(trainer, pl_module, "at the end of the previous epoch")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_weights(trainer, pl_module, "at the end of training")
