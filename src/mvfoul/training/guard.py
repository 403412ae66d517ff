"""The divergence guard (``training.stop_on_divergence``): rather than train on in NaN and keep,
rank and test NaN-weight checkpoints, the run stops with a one-line
:class:`~mvfoul.errors.DivergenceError` at the first non-finite training loss, or at non-finite
weights, checked before every validation and every ``last.ckpt`` (the optimiser step after an
epoch's last finite loss can still break them). Non-finite *gradients* are normal under 16-bit
mixed precision (the gradient scaler skips those steps): only the loss and weights are checked."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from mvfoul.errors import DivergenceError


class DivergenceGuard(Callback):
    """Stops training at the first non-finite loss or weights (see the module docstring)."""

    def __init__(self, training: DictConfig, precision: str) -> None:
        self.learning_rate = training.learning_rate
        self.gradient_clip_val = training.gradient_clip_val
        self.precision = precision

    def _raise(self, trainer: L.Trainer, what: str, value: str) -> None:
        clip = (
            f"lower training.gradient_clip_val (now {self.gradient_clip_val:g})"
            if self.gradient_clip_val
            else "set training.gradient_clip_val (now off), e.g. 1.0"
        )
        fixes = [f"lower training.learning_rate (now {self.learning_rate:g})", clip]
        if not str(self.precision).startswith(("32", "64")):
            fixes.append(f"train in system.precision=32-true (now {self.precision})")
        raise DivergenceError(
            f"training diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: "
            f"{what} is {value}; {', '.join(fixes[:-1])} or {fixes[-1]}; "
            "training.stop_on_divergence=false trains on regardless"
        )

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
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
        broken = [n for n, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        if not trainer.strategy.reduce_boolean_decision(not broken, all=True):
            shown = ", ".join(broken[:3]) + (" ..." if len(broken) > 3 else "")
            what = f"the weights {when} ({len(broken)} parameter tensor(s), e.g. {shown})"
            self._raise(trainer, what, "non-finite")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check_weights(trainer, pl_module, "before validation")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._check_weights(trainer, pl_module, "at the end of the previous epoch")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_weights(trainer, pl_module, "at the end of training")
