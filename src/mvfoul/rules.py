"""Every cross-key rule, registered: the modules below register theirs on import, so whoever
validates through here runs them all (``tests/test_layers.py`` fails if one is missing).
"""

from __future__ import annotations

from omegaconf import DictConfig

import mvfoul.data.datamodule
import mvfoul.data.frames
import mvfoul.data.sampling
import mvfoul.data.synthetic
import mvfoul.data.transforms
import mvfoul.data.video
import mvfoul.losses
import mvfoul.models.backbones
import mvfoul.training.freezing
import mvfoul.training.loggers
import mvfoul.training.metrics
import mvfoul.training.module
import mvfoul.training.resume
import mvfoul.training.trainer  # noqa: F401
from mvfoul.validate import ResolvedRun, check_registered_rules, with_schema

__all__ = ["ResolvedRun", "validate_config", "with_schema"]


def validate_config(cfg: DictConfig) -> ResolvedRun:
    """Raise :class:`~mvfoul.errors.ConfigError` listing every problem of ``cfg`` (schema values,
    unknown keys, every cross-key rule); return the values the rules derive."""
    return check_registered_rules(cfg)
