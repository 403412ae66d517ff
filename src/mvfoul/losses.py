"""Losses of the two heads: cross-entropy and focal, class weights, label smoothing, task weights.
Class weights scale each sample's loss (with label smoothing, each class's share of the target);
the batch loss is the plain mean over the batch, so weights normalised to mean 1 keep its scale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from mvfoul.labels import HEAD_CLASSES, HEADS
from mvfoul.validate import Problems, cross_key_rule

# loss.focal_alpha may name the class weights instead of a number.
ALPHA_CLASS_WEIGHTS = "class_weights"


def class_counts(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """How many training samples each class has (labels outside [0, num_classes) are ignored)."""
    values = torch.as_tensor(list(labels), dtype=torch.long)
    values = values[(values >= 0) & (values < num_classes)]
    return torch.bincount(values, minlength=num_classes)


def class_weights(counts: torch.Tensor, method: str, beta: float = 0.99) -> torch.Tensor:
    """Per-class loss weights from training counts n_c, normalised to mean 1 over present classes:
    ``effective_num`` (Cui et al. 2019): (1 - beta) / (1 - beta ** n_c), saturating for large
    classes; ``inverse_freq``: 1 / n_c; ``balanced`` (scikit-learn's N / (K * n_c), the earlier
    trainer's name): the same once normalised. A class without samples weighs 1, outside the mean.
    """
    counts = counts.to(torch.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("class weights need at least one labelled training sample")
    sizes = counts[present]
    if method == "effective_num":
        raw = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), sizes))
    elif method == "inverse_freq":
        raw = 1.0 / sizes
    else:  # balanced
        raw = sizes.sum() / (len(sizes) * sizes)
    weights = torch.ones_like(counts)
    weights[present] = raw / raw.mean()
    return weights.to(torch.float32)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | None = None,
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean multi-class focal loss (Lin et al. 2017): each class's log-likelihood term scaled by
    ``(1 - p_c) ** gamma``. Targets smoothed as ``F.cross_entropy`` smooths them, so at gamma 0 it
    equals ``F.cross_entropy(..., reduction="none").mean()``. ``alpha`` is a constant factor."""
    num_classes = logits.shape[1]
    log_probs = F.log_softmax(logits.float(), dim=1)
    one_hot = F.one_hot(target, num_classes).to(torch.float32)
    targets = one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes
    if weight is not None:
        targets = targets * weight.to(targets.device)
    modulating = (1.0 - log_probs.exp()).clamp(min=0.0).pow(gamma) if gamma else 1.0
    per_sample = -(targets * modulating * log_probs).sum(dim=1)
    if alpha is not None:
        per_sample = alpha * per_sample
    return per_sample.mean()


class MultiTaskLoss(nn.Module):
    """Weighted sum of the offence+severity and action losses. Class weights live in buffers
    (ones until :meth:`set_class_weights`), so a checkpoint carries the weights it trained with."""

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
        self.function = function
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.label_smoothing = label_smoothing
        self.task_weights = {"offence_severity": severity_weight, "action": action_weight}
        self.use_class_weights = False
        for head in HEADS:
            self.register_buffer(f"{head}_class_weights", torch.ones(len(HEAD_CLASSES[head])))

    def set_class_weights(self, weights: dict[str, torch.Tensor]) -> None:
        for head in HEADS:
            getattr(self, f"{head}_class_weights").copy_(weights[head])
        self.use_class_weights = True

    def head_loss(self, head: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = getattr(self, f"{head}_class_weights") if self.use_class_weights else None
        if self.function == "ce":
            # Mean over samples, not PyTorch's division by the batch's summed weights.
            return F.cross_entropy(
                logits.float(),
                target,
                weight=weight,
                label_smoothing=self.label_smoothing,
                reduction="none",
            ).mean()
        return focal_loss(
            logits, target, self.focal_gamma, self.focal_alpha, self.label_smoothing, weight
        )

    def forward(
        self, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the total loss and each head's unweighted loss."""
        parts = {head: self.head_loss(head, logits[head], targets[head]) for head in HEADS}
        total = torch.stack([self.task_weights[head] * parts[head] for head in HEADS]).sum()
        return total, parts


def uses_class_weights(loss: Any) -> bool:
    """Whether the ``loss`` config weights classes (directly, or as focal loss's alpha)."""
    return bool(loss.use_class_weights) or (
        loss.function == "focal" and loss.focal_alpha == ALPHA_CLASS_WEIGHTS
    )


def scalar_focal_alpha(loss: Any) -> float | None:
    """``loss.focal_alpha`` when it is a number (the class-weights form is handled as weights)."""
    alpha = loss.focal_alpha
    return None if alpha is None or alpha == ALPHA_CLASS_WEIGHTS else float(alpha)


@dataclass(frozen=True)
class LabelSmoothingDecision:
    configured: float
    effective: float
    reason: str | None  # why it was changed; None when kept


def resolve_label_smoothing(loss: Any, sampling: Any) -> LabelSmoothingDecision:
    """Label smoothing is switched off when class-balanced oversampling and class weights are
    both on: each already flattens the gradient towards rare classes, and with smoothing too
    the rare-class signal is spread over every class. ``loss.auto_disable_label_smoothing:
    false`` keeps it."""
    configured = float(loss.label_smoothing)
    oversampling = bool(sampling.use_class_balanced_sampler) and sampling.oversample_factor > 1
    switch_off = configured > 0 and loss.auto_disable_label_smoothing and oversampling
    if switch_off and uses_class_weights(loss):
        reason = (
            f"loss.label_smoothing={configured:g} switched off: class-balanced oversampling "
            f"(sampling.oversample_factor={sampling.oversample_factor:g}) and class weights are both on and would "
            "flatten the gradients together; set loss.auto_disable_label_smoothing=false to keep it"
        )
        return LabelSmoothingDecision(configured, 0.0, reason)
    return LabelSmoothingDecision(configured, configured, None)


def format_class_weight_table(
    counts: dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor],
    names: Mapping[str, Sequence[str]],
) -> str:
    lines = []
    for head in HEADS:
        lines.append(f"class weights ({head}):")
        width = max(len(name) for name in names[head])
        for name, count, weight in zip(names[head], counts[head].tolist(), weights[head].tolist()):
            lines.append(f"  {name:<{width}}  {count:>6d}  {weight:7.3f}")
    return "\n".join(lines)


@cross_key_rule("loss")
def check_loss(cfg: DictConfig, p: Problems) -> None:
    """focal_alpha is a number or the class weights, and at least one head is trained."""
    loss = cfg.loss
    alpha = loss.focal_alpha
    is_number = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
    if not (alpha is None or alpha == ALPHA_CLASS_WEIGHTS or (is_number and 0.0 < alpha <= 1.0)):
        p.add(
            "loss.focal_alpha",
            f"{alpha!r} is not allowed: expected null, a number in (0, 1], or {ALPHA_CLASS_WEIGHTS}",
        )
    if loss.severity_weight == 0 and loss.action_weight == 0:
        p.add("loss.severity_weight", "and loss.action_weight are both 0: nothing would be trained")
