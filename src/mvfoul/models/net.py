"""MultiViewNet: one backbone over every real view, view pooling, a shared layer, two heads.
Padded views never reach the backbone (nor BatchNorm's batch statistics); the shared layer uses
LayerNorm, not BatchNorm1d: a sample's output must not depend on its batch (even a batch of one).
"""

from __future__ import annotations

import torch
from torch import nn

from mvfoul.config import POOLINGS
from mvfoul.labels import NUM_ACTION, NUM_OFFENCE_SEVERITY
from mvfoul.models.backbones import Backbone, build_backbone


class ViewPooling(nn.Module):
    """Pools view features ``[B, V, D]`` over the real views (``view_mask``) to ``[B, D]``: ``max``
    (the VARS baseline's), ``mean``, or ``attention`` (an MLP scores each view, softmax-weighted).
    Padded slots are zeroed with ``torch.where`` (``0 * nan`` is ``nan``), so they affect neither
    output nor gradients; a sample without a real view (a bug upstream) pools to zeros, not NaN."""

    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"unknown view pooling {kind!r}; choose one of: {', '.join(POOLINGS)}")
        self.kind = kind
        if kind == "attention":
            hidden = min(128, dim)
            self.scorer = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        real = view_mask.unsqueeze(-1)
        features = torch.where(real, features, features.new_zeros(()))
        if self.kind == "max":
            pooled = features.masked_fill(~real, float("-inf")).amax(dim=1)
            return torch.where(view_mask.any(dim=1, keepdim=True), pooled, pooled.new_zeros(()))
        if self.kind == "mean":
            count = view_mask.sum(dim=1, keepdim=True).clamp(min=1).to(features.dtype)
            return features.sum(dim=1) / count
        scores = self.scorer(features).squeeze(-1).masked_fill(~view_mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)  # NaN for a row without a real view: zeroed
        weights = torch.where(view_mask, weights, weights.new_zeros(()))
        # Broadcast multiply rather than einsum: under autocast the softmax may run in float32
        # while features are float16, and type promotion handles that where einsum would not.
        return (weights.unsqueeze(-1) * features).sum(dim=1)


class MultiViewNet(nn.Module):
    """The multi-view foul classifier; its arguments are the ``model`` config group's keys."""

    def __init__(
        self,
        backbone: str,
        pretrained: bool = False,
        weights_path: str | None = None,
        pooling: str = "max",
        shared_dim: int = 512,
        dropout_rate: float = 0.3,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.backbone: Backbone = build_backbone(backbone, pretrained, weights_path)
        # NDHWC weights and clips may run cuDNN's 3-D convolutions faster (benchmarks/gpu.py).
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last_3d)
        dim = self.backbone.feature_dim
        self.pooling = ViewPooling(pooling, dim)
        self.shared = nn.Sequential(
            nn.Linear(dim, shared_dim),
            nn.LayerNorm(shared_dim),
            nn.GELU(),
            nn.Dropout(dropout_rate),
        )
        self.offence_severity_head = nn.Linear(shared_dim, NUM_OFFENCE_SEVERITY)
        self.action_head = nn.Linear(shared_dim, NUM_ACTION)

    def forward(self, video: torch.Tensor, view_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``video`` [B, V, C, T, H, W] float, ``view_mask`` bool [B, V] (True = real view) ->
        ``{"offence_severity": [B, 4], "action": [B, 8]}`` logits."""
        if video.dim() != 6 or view_mask.shape != video.shape[:2]:
            raise ValueError(
                f"MultiViewNet expects video [B, V, C, T, H, W] and view_mask [B, V], got "
                f"{list(video.shape)} and {list(view_mask.shape)}"
            )
        if view_mask.dtype != torch.bool:
            raise ValueError(f"view_mask must be bool (True = real view), got {view_mask.dtype}")
        clips = video[view_mask]
        if self.channels_last:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        real_features = self.backbone(clips)  # [N_real, D], row-major over (b, v)
        # Back to [B, V, D], padded slots zero: out-of-place, in the boolean selection's order.
        features = real_features.new_zeros(*view_mask.shape, real_features.shape[-1])
        features = features.index_put((view_mask,), real_features)
        shared = self.shared(self.pooling(features, view_mask))
        return {
            "offence_severity": self.offence_severity_head(shared),
            "action": self.action_head(shared),
        }

    def head_parameters(self) -> list[nn.Parameter]:
        """Pooling, shared layer and both heads: everything trained from scratch."""
        modules = (self.pooling, self.shared, self.offence_severity_head, self.action_head)
        return [p for module in modules for p in module.parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())
