"""The backbone LR boost: raise the backbone param group's base LR mid-run, keeping its schedule.

:class:`~mvfoul.training.freezing.GradualUnfreezing` calls it once, when half the backbone trains
(``freezing.enable_backbone_lr_boost``, ``freezing.backbone_lr_ratio_after_half``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mvfoul.training.optim import WarmupCosineLR

# Param-group names, as built by mvfoul.training.optim.build_optimizer.
HEAD_GROUP = "head"
BACKBONE_GROUP = "backbone"


@dataclass(frozen=True)
class LRBoost:
    """What a boost changed in the backbone group: its base LR and its current LR."""

    old_base: float
    new_base: float
    ratio: float  # new_base / the head's base LR
    old_lr: float
    new_lr: float
    multiplier: float  # the schedule's multiplier when the boost fired: old_lr / old_base

    def __str__(self) -> str:
        return (
            f"base LR {self.old_base:.3g} -> {self.new_base:.3g} (head LR x {self.ratio:g}), "
            f"current LR {self.old_lr:.3g} -> {self.new_lr:.3g} "
            f"(schedule multiplier {self.multiplier:.4g})"
        )


def boost_backbone_lr(
    optimizer: torch.optim.Optimizer,
    schedulers: Sequence[Any],
    backbone: Iterable[torch.nn.Parameter],
    ratio: float,
    head_lr: float | None = None,
    backbone_lr: float | None = None,
) -> LRBoost | None:
    """Set the backbone group's base LR to ``head_lr * ratio``; None when no group holds the
    backbone (the group named ``backbone``, else the one holding its parameters).

    The current LR becomes the new base times the schedule's current multiplier (current LR / old
    base); under :class:`WarmupCosineLR`, whose floor is absolute, the schedule's value at the new
    base. The new base goes into the group's ``initial_lr`` and the ``base_lrs`` of those
    ``schedulers`` that step ``optimizer``, so the schedule continues from it.

    ``head_lr``: the head group's configured base LR (None: its ``initial_lr``, else ``lr``).
    ``backbone_lr``: the backbone's configured base LR, the old base when neither a scheduler's
    ``base_lrs`` (plateau and none have none) nor the group's ``initial_lr`` tells it.
    """
    index = _backbone_group(optimizer, backbone)
    if index is None:
        return None
    group = optimizer.param_groups[index]
    new_base = _head_base_lr(optimizer, index, head_lr) * ratio
    schedulers = [s for s in schedulers if getattr(s, "optimizer", None) is optimizer]
    # Those that keep a base LR for the group (plateau and none keep none).
    with_base = [s for s in schedulers if index < len(getattr(s, "base_lrs", None) or ())]
    if with_base:
        old_base = float(with_base[0].base_lrs[index])
    else:
        fallback = backbone_lr if backbone_lr is not None else group["lr"]
        old_base = float(group.get("initial_lr", fallback))
    current = float(group["lr"])
    multiplier = current / old_base if old_base > 0 else 1.0
    new_lr = new_base * multiplier
    cosine = next((s for s in schedulers if isinstance(s, WarmupCosineLR)), None)
    if cosine is not None:
        new_lr = cosine.lr_at(cosine.last_epoch, new_base)

    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(new_lr)  # tensor LRs (capturable optimisers) are updated in place
    else:
        group["lr"] = new_lr
    group["initial_lr"] = new_base
    for scheduler in with_base:
        scheduler.base_lrs[index] = new_base
    for scheduler in schedulers:
        last = getattr(scheduler, "_last_lr", None)
        if isinstance(last, list) and index < len(last):
            last[index] = new_lr  # what get_last_lr() reports until the next step
    return LRBoost(old_base, new_base, ratio, current, new_lr, multiplier)


def _backbone_group(
    optimizer: torch.optim.Optimizer, backbone: Iterable[torch.nn.Parameter]
) -> int | None:
    groups = optimizer.param_groups
    named = [i for i, g in enumerate(groups) if g.get("name") == BACKBONE_GROUP]
    if named:
        return named[0]
    # An optimiser built elsewhere: the group holding the backbone's parameters.
    ids = {id(p) for p in backbone}
    for index, group in enumerate(groups):
        if any(id(p) in ids for p in group["params"]):
            return index
    return None


def _head_base_lr(
    optimizer: torch.optim.Optimizer, backbone_index: int, head_lr: float | None
) -> float:
    if head_lr is not None:
        return head_lr
    others = [g for i, g in enumerate(optimizer.param_groups) if i != backbone_index]
    if not others:
        raise ValueError("freezing: the LR boost needs a head param group (or head_lr)")
    # The group named head, else the first other one.
    named = [g for g in others if g.get("name") == HEAD_GROUP]
    head = named[0] if named else others[0]
    return float(head.get("initial_lr", head["lr"]))
