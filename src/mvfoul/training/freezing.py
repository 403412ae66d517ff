"""Gradual unfreezing of the backbone's blocks, top-down (the ``freezing`` group), and the
backbone LR boost once half of them train. Frozen: no update, BatchNorm in eval mode. Every
backbone parameter is in the optimiser's ``backbone`` group from the start, so unfreezing adds no
param group. Under DDP, ``requires_grad`` cannot change (DDP only averages the gradients of the
parameters that needed them when it wrapped the model): there frozen blocks' gradients are dropped
before each optimiser step instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DeepSpeedStrategy
from omegaconf import DictConfig
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mvfoul.config import FREEZING_STRATEGIES, MONITOR_MODES, FreezingConfig, within
from mvfoul.models.backbones import Backbone
from mvfoul.training.module import WarmupCosineLR, group_learning_rates
from mvfoul.validate import Problems, cross_key_rule

log = logging.getLogger(__name__)

# Logged at each train epoch start; the boost's is 1.0 in the epoch it fires, else 0.0.
TRAINABLE_BLOCKS_METRIC = "freezing/trainable_blocks"
TRAINABLE_FRACTION_METRIC = "freezing/backbone_trainable_fraction"
BOOST_METRIC = "freezing/backbone_lr_boost"


@dataclass(eq=False)  # eq=False keeps hashing by identity, as Lightning expects of callbacks
class GradualUnfreezing(Callback):
    """The ``freezing`` keys, ``experiment.monitor``/``mode`` and the configured base LRs (None:
    read from the optimiser). ``unfreeze_schedule`` holds 0-based epochs."""

    strategy: str = "progressive"
    unfreeze_blocks: int = 1
    unfreeze_schedule: Sequence[int] = (5, 10, 15)
    patience_epochs: int = 2
    min_improvement: float = 0.001
    monitor: str = "val/sev_acc"
    mode: str = "max"
    enable_backbone_lr_boost: bool = True
    backbone_lr_ratio_after_half: float = 0.6
    head_lr: float | None = None
    backbone_lr: float | None = None

    def __post_init__(self) -> None:
        # The schema's choices and ranges, for callers that skip validate_config (tests, scripts).
        for name, value, allowed in (
            ("freezing_strategy", self.strategy, FREEZING_STRATEGIES),
            ("mode", self.mode, MONITOR_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")
        for f in fields(FreezingConfig):
            number = getattr(self, f.name, None)
            bounds = f.metadata.get("bounds")
            if bounds and number is not None and not within(number, bounds):
                raise ValueError(f"{f.name} must be {bounds}, got {number}")
        self.unfreeze_schedule = sorted(int(e) for e in self.unfreeze_schedule)
        # Checkpointed (state_dict): adaptive progress, and whether the boost has fired.
        self.unfrozen_blocks = 0
        self.best: float | None = None
        self.bad_epochs = 0  # validations since the last improvement or unfreeze
        self.boosted = False
        self._blocks: list[nn.Module] = []  # each backbone parameter in exactly one
        self._trainable = 0  # blocks that train, from the top
        self.masking = False  # DDP: frozen blocks keep requires_grad; their gradients are dropped
        self._warned: set[str] = set()

    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    def trainable_blocks_at(self, epoch: int) -> int:
        """How many blocks (from the top) train during ``epoch``, before clamping."""
        if self.strategy == "none":
            return self.num_blocks
        if self.strategy == "progressive":
            return self.unfreeze_blocks * sum(1 for e in self.unfreeze_schedule if e <= epoch)
        return self.unfrozen_blocks

    def frozen_blocks(self) -> list[nn.Module]:
        return self._blocks[: self.num_blocks - self._trainable]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._blocks = cast(Backbone, pl_module.get_submodule("net.backbone")).blocks()
        self.masking = trainer.world_size > 1
        if stage != "fit":
            return  # validate/test/predict never train: leave the module as it is
        if isinstance(trainer.strategy, DeepSpeedStrategy):  # it owns the gradients we drop
            raise NotImplementedError("freezing does not support DeepSpeed: set freezing=none")
        self._trainable = self.num_blocks if self.strategy == "none" else 0
        # BatchNorm goes to eval mode only at the first train epoch start: Lightning warns about
        # modules in eval mode when training starts (the sanity check runs in eval mode anyway).
        if not self.masking:
            for block in self.frozen_blocks():
                _set_trainable(block, False)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(self.trainable_blocks_at(trainer.current_epoch))
        sizes = [sum(p.numel() for p in block.parameters()) for block in self._blocks]
        trainable = sum(sizes[self.num_blocks - self._trainable :])
        metrics = {
            TRAINABLE_BLOCKS_METRIC: float(self._trainable),
            TRAINABLE_FRACTION_METRIC: trainable / sum(sizes) if sum(sizes) else 1.0,
            BOOST_METRIC: float(self._boost_if_due(trainer)),
        }
        # The same numbers on every rank: no sync. batch_size=1: there is no batch at epoch start.
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=False, batch_size=1)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # For a model put back in train mode since the epoch started (e.g. by an overridden
        # on_validation_model_train after a mid-epoch validation).
        for block in self.frozen_blocks():
            for bn in _batchnorms(block):
                bn.eval()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # After DDP's all-reduce (every rank drops the same gradients) and before clipping, so
        # the clipped norm is that of the parameters that train.
        if self.masking:
            for block in self.frozen_blocks():
                for p in block.parameters():
                    p.grad = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not on_validation_epoch_end: callbacks' epoch-end hooks run before the module's, where
        # mvfoul logs its validation scores (EarlyStopping uses this hook too).
        if self.strategy != "adaptive" or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            self._warn_once(
                "no_monitor",
                f"freezing: adaptive unfreezing watches {self.monitor!r}, which was not logged; "
                f"logged: {', '.join(sorted(trainer.callback_metrics)) or 'nothing'}",
            )
            return
        self.observe(float(value), is_global_zero=trainer.is_global_zero)

    def observe(self, value: float, is_global_zero: bool = True) -> None:
        """One validation value of the monitor."""
        if self.unfrozen_blocks >= self.num_blocks:
            return  # nothing left to unfreeze
        if self._improved(value):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs < self.patience_epochs:
            return
        self.bad_epochs = 0
        before = self.unfrozen_blocks
        self.unfrozen_blocks = min(self.num_blocks, before + self.unfreeze_blocks)
        if is_global_zero:
            log.info(
                f"freezing: {self.monitor} has not improved by {self.min_improvement:g} for "
                f"{self.patience_epochs} validation epochs (best {self.best}): unfreezing "
                f"backbone blocks {before} -> {self.unfrozen_blocks} of {self.num_blocks} from "
                "the next epoch"
            )

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)  # the first value is the best so far
        gain = value - self.best if self.mode == "max" else self.best - value
        # At least min_improvement, tolerant of float noise (0.601 - 0.6 < 0.001 in floats); with
        # min_improvement 0, an equal value is not an improvement; NaN never is.
        return gain > 0 and (
            gain >= self.min_improvement or math.isclose(gain, self.min_improvement, rel_tol=1e-9)
        )

    def state_dict(self) -> dict[str, Any]:
        keys = ("strategy", "unfrozen_blocks", "best", "bad_epochs", "boosted")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # .get: a checkpoint written before a key existed resumes with its default.
        self.unfrozen_blocks = int(state_dict.get("unfrozen_blocks", 0))
        self.best = None if state_dict.get("best") is None else float(state_dict["best"])
        self.bad_epochs = int(state_dict.get("bad_epochs", 0))
        self.boosted = bool(state_dict.get("boosted", False))

    def _apply(self, trainable: int) -> None:
        """The top ``trainable`` blocks train; the others are frozen (under DDP: their gradients
        dropped) with BatchNorm in eval mode. Idempotent: the state follows from ``trainable``."""
        self._trainable = min(self.num_blocks, trainable)
        if self.strategy == "none":
            return  # leave the module as it is
        for i, block in enumerate(self._blocks):
            trains = i >= self.num_blocks - self._trainable
            if trains or not self.masking:
                _set_trainable(block, trains)
            for bn in _batchnorms(block):
                bn.train(trains)

    def _boost_if_due(self, trainer: pl.Trainer) -> bool:
        """Fire the LR boost once at least half the blocks train; True in the epoch it fires."""
        due = self.enable_backbone_lr_boost and 2 * self._trainable >= self.num_blocks
        if self.boosted or not due:
            return False
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        for optimizer in trainer.optimizers:
            backbone = (p for block in self._blocks for p in block.parameters())
            boost = boost_backbone_lr(
                optimizer,
                schedulers,
                backbone,
                ratio=self.backbone_lr_ratio_after_half,
                head_lr=self.head_lr,
                backbone_lr=self.backbone_lr,
            )
            if boost is not None:
                self.boosted = True
                if trainer.is_global_zero:
                    log.info(
                        f"freezing: {self._trainable} of {self.num_blocks} backbone blocks "
                        f"trainable at epoch {trainer.current_epoch}: backbone LR boost, {boost}"
                    )
                return True
        self._warn_once(
            "no_group",
            "freezing: the backbone LR boost is due but no optimiser param group holds the "
            "backbone's parameters; the boost is skipped",
        )
        return False

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


def _batchnorms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def _set_trainable(block: nn.Module, trainable: bool) -> None:
    for p in block.parameters():
        p.requires_grad = trainable
    for bn in _batchnorms(block):  # a second guard, should a frozen BN get into train mode
        bn.track_running_stats = trainable


def boost_backbone_lr(
    optimizer: torch.optim.Optimizer,
    schedulers: Sequence[Any],
    backbone: Iterable[torch.nn.Parameter],
    ratio: float,
    head_lr: float | None = None,
    backbone_lr: float | None = None,
) -> str | None:
    """Set the base LR of the backbone's param group (named ``backbone``, else the one holding
    ``backbone``) to ``head_lr * ratio``, keeping the schedule's current multiplier (under
    :class:`WarmupCosineLR`, whose floor is absolute, its value at the new base); describe the
    change, or None without such a group. ``head_lr``, ``backbone_lr``: the configured base LRs
    (None: read from the groups; plateau and none schedules keep no base LR of their own)."""
    groups = optimizer.param_groups
    ids = {id(p) for p in backbone}
    named = [i for i, g in enumerate(groups) if g.get("name") == "backbone"]
    holding = [i for i, g in enumerate(groups) if any(id(p) in ids for p in g["params"])]
    if not named and not holding:
        return None
    index = (named + holding)[0]
    group = groups[index]
    if head_lr is None:
        others = [g for i, g in enumerate(groups) if i != index]
        if not others:
            raise ValueError("freezing: the LR boost needs a head param group (or head_lr)")
        head = next((g for g in others if g.get("name") == "head"), others[0])
        head_lr = float(head.get("initial_lr", head["lr"]))
    new_base = head_lr * ratio
    fallback = backbone_lr if backbone_lr is not None else group["lr"]
    old_base = float(group.get("initial_lr", fallback))
    old_lr = float(group["lr"])
    multiplier = old_lr / old_base if old_base > 0 else 1.0
    schedulers = [s for s in schedulers if getattr(s, "optimizer", None) is optimizer]
    cosine = next((s for s in schedulers if isinstance(s, WarmupCosineLR)), None)
    new_lr = new_base * multiplier if cosine is None else cosine.lr_at(cosine.last_epoch, new_base)
    group["lr"] = new_lr
    group["initial_lr"] = new_base
    for scheduler in schedulers:
        if hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs[index] = new_base
        if hasattr(scheduler, "_last_lr"):  # what get_last_lr() reports until the next step
            scheduler._last_lr[index] = new_lr
    return (
        f"base LR {old_base:.3g} -> {new_base:.3g} (head LR x {ratio:g}), "
        f"current LR {old_lr:.3g} -> {new_lr:.3g} (schedule multiplier {multiplier:.4g})"
    )


def build_freezing_callback(cfg: DictConfig) -> GradualUnfreezing | None:
    """The callback for the composed config; None when there is nothing to do. Without gradual
    fine-tuning but with the boost, every block trains from the start and the boost fires first."""
    freezing = cfg.freezing
    gradual = bool(freezing.gradual_finetuning) and freezing.freezing_strategy != "none"
    if not gradual and not freezing.enable_backbone_lr_boost:
        return None
    rates = group_learning_rates(cfg.training)
    return GradualUnfreezing(
        strategy=freezing.freezing_strategy if gradual else "none",
        unfreeze_blocks=freezing.unfreeze_blocks,
        unfreeze_schedule=list(freezing.unfreeze_schedule),
        patience_epochs=freezing.patience_epochs,
        min_improvement=freezing.min_improvement,
        monitor=cfg.experiment.monitor,
        mode=cfg.experiment.mode,
        enable_backbone_lr_boost=freezing.enable_backbone_lr_boost,
        backbone_lr_ratio_after_half=freezing.backbone_lr_ratio_after_half,
        head_lr=rates["head"],
        backbone_lr=rates["backbone"],
    )


@cross_key_rule("freezing")
def check_unfreeze_schedule(cfg: DictConfig, p: Problems) -> None:
    schedule = list(cfg.freezing.unfreeze_schedule)
    if any(e < 0 for e in schedule) or schedule != sorted(schedule):
        p.add(
            "freezing.unfreeze_schedule",
            f"{schedule} must be non-negative epochs in increasing order",
        )
