"""Optimiser with separate head and backbone parameter groups, and the LR schedules."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from omegaconf import DictConfig

from mvfoul.models.net import MultiViewNet


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
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=training.weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, weight_decay=training.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=training.momentum, weight_decay=training.weight_decay)
    raise ValueError(f"training.optimizer {name!r} is not one of adamw, adam, sgd")


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, floor: float
) -> float:
    """LR multiplier at ``step``: linear warmup to 1, then cosine decay to ``floor``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


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
        lambdas: list[Callable[[int], float]] = []
        for group in optimizer.param_groups:
            # min_lr is absolute: each group decays to the same floor from its own rate.
            floor = min(1.0, training.min_lr / group["lr"])
            lambdas.append(
                lambda step, f=floor: warmup_cosine_factor(step, warmup_steps, total_steps, f)
            )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"scheduler": scheduler, "interval": "step", "name": "lr"}
    if name == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=training.step_size, gamma=training.gamma)
        return {"scheduler": scheduler, "interval": "epoch", "name": "lr"}
    if name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=training.plateau_factor, patience=training.plateau_patience
        )
        return {"scheduler": scheduler, "interval": "epoch", "monitor": monitor, "name": "lr"}
    raise ValueError(f"training.scheduler {name!r} is not one of cosine, step, plateau, none")
