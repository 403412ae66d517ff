"""Models (config group ``model``): video backbones by name, view pooling, the two-headed net.

* :mod:`mvfoul.models.backbones` - the backbone registry (``model.backbone``, ``model.pretrained``,
  ``model.weights_path``): :data:`BACKBONES` specs with input constraints, :func:`build_backbone`.
* :mod:`mvfoul.models.pooling` - masked view pooling (``model.pooling``).
* :mod:`mvfoul.models.net` - :class:`MultiViewNet` (``model.shared_dim``, ``model.dropout_rate``).
"""

from __future__ import annotations

from mvfoul.models.backbones import (
    BACKBONES,
    Backbone,
    BackboneSpec,
    TinyVideoCNN,
    build_backbone,
    hub_weights_path,
)
from mvfoul.models.net import MultiViewNet
from mvfoul.models.pooling import (
    POOLING_KINDS,
    AttentionViewPooling,
    MaxViewPooling,
    MeanViewPooling,
    build_view_pooling,
)

__all__ = [
    "BACKBONES",
    "POOLING_KINDS",
    "AttentionViewPooling",
    "Backbone",
    "BackboneSpec",
    "MaxViewPooling",
    "MeanViewPooling",
    "MultiViewNet",
    "TinyVideoCNN",
    "build_backbone",
    "build_view_pooling",
    "hub_weights_path",
]
