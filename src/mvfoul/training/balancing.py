"""Drives the class-balanced sampler through the epochs and logs what it draws."""

from __future__ import annotations

import re
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from mvfoul.data.sampling import expected_distribution, ramp_fraction
from mvfoul.labels import HEAD_CLASSES, HEAD_METRIC_PREFIX, HEADS

# Head -> (metric prefix, class names).
_TASKS = {head: (HEAD_METRIC_PREFIX[head], HEAD_CLASSES[head]) for head in HEADS}


def slug(name: str) -> str:
    """'Offence + Yellow card' -> 'offence_yellow_card': a metric-name-friendly class name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


class SamplingScheduleCallback(Callback):
    """At each training epoch start: sets the sampler's epoch (its weights depend on it alone)
    and logs the expected class distribution of that epoch's draw for both tasks, as
    ``sampling/<sev|action>/<class>`` (fractions), plus ``sampling/balance_fraction`` (0 =
    natural frequencies, 1 = the capped balanced target)."""

    def __init__(self, progressive: bool, start_epoch: int, end_epoch: int) -> None:
        self.progressive = progressive
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule: Any = getattr(trainer, "datamodule", None)
        sampler = getattr(datamodule, "train_sampler", None)
        if sampler is None:
            return
        epoch = trainer.current_epoch
        # Lightning forwards set_epoch too, but not through every wrapper: set it here as well,
        # before the epoch's iterator draws the indices.
        sampler.set_epoch(epoch)
        probs = np.asarray(sampler.sample_weights(epoch))
        labels = datamodule.train_labels()
        values: dict[str, float] = {}
        for head, (prefix, names) in _TASKS.items():
            dist = expected_distribution(probs, labels[head], len(names))
            values.update({f"sampling/{prefix}/{slug(n)}": float(p) for n, p in zip(names, dist)})
        fraction = (
            ramp_fraction(epoch, self.start_epoch, self.end_epoch) if self.progressive else 1.0
        )
        values["sampling/balance_fraction"] = float(fraction)
        pl_module.log_dict(values, on_step=False, on_epoch=True)


def build_sampling_callback(cfg: DictConfig) -> SamplingScheduleCallback | None:
    s = cfg.sampling
    if not s.use_class_balanced_sampler:
        return None
    return SamplingScheduleCallback(
        s.progressive_class_balancing, s.progressive_start_epoch, s.progressive_end_epoch
    )
