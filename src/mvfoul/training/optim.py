"""Optimiser with separate head and backbone parameter groups, and the LR schedules."""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig

from mvfoul.models.net import MultiViewNet
from mvfoul.validate import Problems, cross_key_rule


def group_learning_rates(training: DictConfig) -> dict[str, float]:
    """Learning rate of each parameter group; a null rate falls back to learning_rate."""
    base = float(training.learning_rate)
    return {
        "head": float(training.head_lr) if training.head_lr is not None else base,
        "backbone": float(training.backbone_lr) if training.backbone_lr is not None else base,
    }


def build_optimizer(training: DictConfig, net: MultiViewNet) -> torch.optim.Optimizer:
    rates = group_learning_rates(training)
    groups = [
        {"name": "head", "params": net.head_parameters(), "lr": rates["head"]},
        {"name": "backbone", "params": net.backbone_parameters(), "lr": rates["backbone"]},
    ]
    name = training.optimizer
    decay = training.weight_decay
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=decay)
    if name == "adam":
        return torch.optim.Adam(groups, weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=training.momentum, weight_decay=decay)
    raise ValueError(f"training.optimizer {name!r} is not one of adamw, adam, sgd")


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Per step: linear warmup from ~0 to each group's base LR, then cosine decay to ``min_lr``.

    ``min_lr`` is absolute and the LR is computed from ``base_lrs`` at every step, so a group
    whose base LR changes mid-run (the backbone LR boost) keeps the same schedule shape and
    floor.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr: float
    ) -> None:
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.min_lr = float(min_lr)
        super().__init__(optimizer)

    def lr_at(self, step: int, base_lr: float) -> float:
        if step < self.warmup_steps:
            return base_lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = min(self.min_lr, base_lr)
        return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float | torch.Tensor]:
        return [self.lr_at(self.last_epoch, float(base)) for base in self.base_lrs]


def build_scheduler(
    training: DictConfig,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    monitor: str,
    mode: str,
) -> dict[str, Any] | None:
    """Lightning's lr_scheduler config for ``training.scheduler`` (None for ``none``)."""
    name = training.scheduler
    if name == "none":
        return None
    if name == "cosine":
        steps_per_epoch = max(1, total_steps // max(1, training.max_epochs))
        warmup_steps = int(round(training.warmup_epochs * steps_per_epoch))
        cosine = WarmupCosineLR(optimizer, warmup_steps, total_steps, training.min_lr)
        return {"scheduler": cosine, "interval": "step", "name": "lr"}
    if name == "step":
        step = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=training.step_size, gamma=training.gamma
        )
        return {"scheduler": step, "interval": "epoch", "name": "lr"}
    if name == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min" if mode == "min" else "max",
            factor=training.plateau_factor,
            patience=training.plateau_patience,
        )
        return {"scheduler": plateau, "interval": "epoch", "monitor": monitor, "name": "lr"}
    raise ValueError(f"training.scheduler {name!r} is not one of cosine, step, plateau, none")


def configure_optimization(cfg: DictConfig, net: MultiViewNet, total_steps: int) -> Any:
    """What ``LightningModule.configure_optimizers`` returns for the composed config ``cfg``."""
    optimizer = build_optimizer(cfg.training, net)
    experiment = cfg.experiment
    scheduler = build_scheduler(
        cfg.training, optimizer, total_steps, experiment.monitor, experiment.mode
    )
    return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}


@cross_key_rule("training")
def check_schedule(cfg: DictConfig, p: Problems) -> None:
    """Cosine decay ends below every rate, and warmup ends before training does."""
    training = cfg.training
    configured = (training.learning_rate, training.head_lr, training.backbone_lr)
    rates = [rate for rate in configured if rate is not None and rate > 0]
    if training.scheduler == "cosine" and rates and training.min_lr >= min(rates):
        p.add(
            "training.min_lr",
            f"{training.min_lr!r} must be below every learning rate (smallest: {min(rates)!r})",
        )
    if training.warmup_epochs >= training.max_epochs >= 1:
        p.add(
            "training.warmup_epochs",
            f"{training.warmup_epochs!r} must be shorter than training.max_epochs ({training.max_epochs})",
        )
