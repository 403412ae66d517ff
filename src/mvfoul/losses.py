"""Losses of the two heads: cross-entropy and focal, with label smoothing and task weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("offence_severity", "action")


def smoothed_targets(target: torch.Tensor, num_classes: int, label_smoothing: float) -> torch.Tensor:
    """One-hot targets mixed with the uniform distribution, as ``F.cross_entropy`` does."""
    one_hot = F.one_hot(target, num_classes).to(torch.float32)
    return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean multi-class focal loss (Lin et al. 2017) over the batch.

    Each class's log-likelihood term is scaled by ``(1 - p_c) ** gamma``, so confident, easy
    examples contribute little. Written over the (smoothed) target distribution, it equals
    ``F.cross_entropy(..., label_smoothing=...)`` exactly when ``gamma == 0``.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    targets = smoothed_targets(target, logits.shape[1], label_smoothing)
    modulating = (1.0 - log_probs.exp()).clamp(min=0.0).pow(gamma) if gamma else 1.0
    per_sample = -(targets * modulating * log_probs).sum(dim=1)
    if alpha is not None:
        per_sample = alpha * per_sample
    return per_sample.mean()


class MultiTaskLoss(nn.Module):
    """Weighted sum of the offence+severity and action losses."""

    def __init__(
        self,
        function: str = "focal",
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
        label_smoothing: float = 0.0,
        severity_weight: float = 1.0,
        action_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if function not in ("focal", "ce"):
            raise ValueError(f"loss function {function!r} is not one of focal, ce")
        self.function = function
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.label_smoothing = label_smoothing
        self.task_weights = {"offence_severity": severity_weight, "action": action_weight}

    def head_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.function == "ce":
            return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)
        return focal_loss(logits, target, self.focal_gamma, self.focal_alpha, self.label_smoothing)

    def forward(
        self, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the total loss and each head's unweighted loss."""
        parts = {head: self.head_loss(logits[head], targets[head]) for head in HEADS}
        total = sum(self.task_weights[head] * parts[head] for head in HEADS)
        return total, parts
