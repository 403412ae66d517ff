"""View pooling (``model.pooling``): an action's per-view features ``[B, V, D]`` -> ``[B, D]``.

A batch is padded to its largest view count and carries ``view_mask`` bool ``[B, V]`` (True = a
real view). Padded slots are zeroed first with ``torch.where`` (not multiplication: ``0 * nan``
is ``nan``), so whatever they hold, output and gradients are those of the real views alone. A
sample with no real view (a bug upstream) pools to zeros, not NaN: a bad prediction rather than
a poisoned model.
"""

from __future__ import annotations

import torch
from torch import nn

from mvfoul.config import POOLINGS

POOLING_KINDS: tuple[str, ...] = POOLINGS  # declared by the schema (model.pooling)


def _check(features: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
    """Validate shapes and return ``features`` with padded slots zeroed."""
    if features.dim() != 3 or view_mask.shape != features.shape[:2]:
        raise ValueError(
            f"view pooling expects features [B, V, D] and view_mask [B, V], got "
            f"{list(features.shape)} and {list(view_mask.shape)}"
        )
    if view_mask.dtype != torch.bool:
        raise ValueError(f"view_mask must be bool (True = real view), got {view_mask.dtype}")
    return torch.where(view_mask.unsqueeze(-1), features, features.new_zeros(()))


class MaxViewPooling(nn.Module):
    """Element-wise maximum over the real views (the VARS baseline's choice)."""

    def forward(self, features: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        features = _check(features, view_mask)
        pooled = features.masked_fill(~view_mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        return torch.where(view_mask.any(dim=1, keepdim=True), pooled, pooled.new_zeros(()))


class MeanViewPooling(nn.Module):
    """Average over the real views."""

    def forward(self, features: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        features = _check(features, view_mask)
        count = view_mask.sum(dim=1, keepdim=True).clamp(min=1).to(features.dtype)
        return features.sum(dim=1) / count


class AttentionViewPooling(nn.Module):
    """A learned weighted average: a small MLP scores each view, softmax over the real views, so
    the model can lean on the camera that shows the contact best (a tiny scorer suffices for a
    few views and is hard to overfit)."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        hidden = max(1, min(hidden, dim))
        self.scorer = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        features = _check(features, view_mask)
        scores = self.scorer(features).squeeze(-1).masked_fill(~view_mask, float("-inf"))
        # A row with no real view is softmax(all -inf) = NaN; zero it.
        weights = torch.softmax(scores, dim=1)
        weights = torch.where(view_mask, weights, weights.new_zeros(()))
        # Broadcast multiply rather than einsum: under autocast the softmax may run in float32
        # while features are float16, and type promotion handles that where einsum would not.
        return (weights.unsqueeze(-1) * features).sum(dim=1)


def build_view_pooling(kind: str, dim: int) -> nn.Module:
    """The pooling named ``kind`` (one of :data:`POOLING_KINDS`) for ``dim``-wide features."""
    if kind == "max":
        return MaxViewPooling()
    if kind == "mean":
        return MeanViewPooling()
    if kind == "attention":
        return AttentionViewPooling(dim)
    raise ValueError(f"unknown view pooling {kind!r}; choose one of: {', '.join(POOLING_KINDS)}")
