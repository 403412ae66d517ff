"""Every cross-key rule, registered, and the one call that checks a config against them all.

The rules live beside the code they protect (the window with the decoder, the monitor with the
metrics, ...) and register themselves with :func:`mvfoul.validate.cross_key_rule` when their
module is imported. This module imports each of those modules, so that whoever validates here
runs every rule; ``tests/test_config.py`` fails if a module defining a rule is missing below.
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
import mvfoul.training.extensions
import mvfoul.training.freezing
import mvfoul.training.loggers
import mvfoul.training.metrics
import mvfoul.training.optim
import mvfoul.training.resume
import mvfoul.training.trainer  # noqa: F401
from mvfoul.validate import ResolvedRun, check_registered_rules, with_schema

__all__ = ["ResolvedRun", "validate_config", "with_schema"]


def validate_config(cfg: DictConfig) -> ResolvedRun:
    """Raise :class:`~mvfoul.errors.ConfigError` listing every problem of ``cfg`` (schema values,
    unknown keys, every cross-key rule); return the values the rules derive."""
    return check_registered_rules(cfg)
