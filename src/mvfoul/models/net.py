"""MultiViewNet: one backbone over every real view, view pooling, a shared layer, two heads.

::

    video [B, V, C, T, H, W], view_mask [B, V]
      -> backbone on the real views only (one batched call) -> [N_real, D]
      -> scattered back to [B, V, D] (padded slots zero) -> masked view pooling -> [B, D]
      -> shared: Linear -> LayerNorm -> GELU -> Dropout -> [B, shared_dim]
      -> offence_severity head [B, 4], action head [B, 8]

Padded views never reach the backbone: that saves their compute and keeps them out of
BatchNorm's batch statistics. LayerNorm, not BatchNorm1d, in the shared layer for the same
reason: a sample's output must not depend on its batch (and batches of one must work).
"""

from __future__ import annotations

import torch
from torch import nn

from mvfoul.labels import NUM_ACTION, NUM_OFFENCE_SEVERITY
from mvfoul.models.backbones import Backbone, build_backbone
from mvfoul.models.pooling import build_view_pooling


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
        # channels_last_3d: weights and input clips in NDHWC order, which cuDNN's 3-D convolutions
        # may run faster (benchmarks/gpu.py measures it; system.channels_last).
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last_3d)
        dim = self.backbone.feature_dim
        self.pooling = build_view_pooling(pooling, dim)
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

        clips = video[view_mask]  # the real views only
        if self.channels_last:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        real_features = self.backbone(clips)  # [N_real, D], row-major over (b, v)
        features = real_features.new_zeros(*view_mask.shape, real_features.shape[-1])
        # Out-of-place index_put: same (b, v) order as the boolean selection above.
        features = features.index_put((view_mask,), real_features)

        shared = self.shared(self.pooling(features, view_mask))
        return {
            "offence_severity": self.offence_severity_head(shared),
            "action": self.action_head(shared),
        }

    def head_parameters(self) -> list[nn.Parameter]:
        """Pooling, shared layer and both heads: everything trained from scratch."""
        modules = (self.pooling, self.shared, self.offence_severity_head, self.action_head)
        parameters: list[nn.Parameter] = []
        for module in modules:
            parameters.extend(module.parameters())
        return parameters

    def backbone_parameters(self) -> list[nn.Parameter]:  # pretrained: a lower LR, maybe frozen
        return list(self.backbone.parameters())
