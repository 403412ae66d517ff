"""Drives the class-balanced sampler through the epochs and logs what it draws."""

from __future__ import annotations

import re
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from mvfoul.data.sampling import expected_distribution
from mvfoul.labels import HEAD_CLASSES, HEAD_METRIC_PREFIX, HEADS


class SamplingScheduleCallback(Callback):
    """At each training epoch start: sets the sampler's epoch and logs the expected class mix of
    that epoch's draw for both tasks, as ``sampling/<sev|action>/<class>`` (fractions), plus
    ``sampling/balance_fraction`` (0 = natural frequencies, 1 = the capped balanced target)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule: Any = getattr(trainer, "datamodule", None)
        sampler = getattr(datamodule, "train_sampler", None)
        if sampler is None:
            return
        epoch = trainer.current_epoch
        # Lightning forwards set_epoch too, but not through every wrapper: set it here as well,
        # before the epoch's iterator draws the indices.
        sampler.set_epoch(epoch)
        probs = sampler.sample_weights(epoch)
        labels = datamodule.train_labels()
        values: dict[str, float] = {}
        for head in HEADS:
            names = HEAD_CLASSES[head]
            dist = expected_distribution(probs, labels[head], len(names))
            for name, p in zip(names, dist):
                # 'Offence + Yellow card' -> 'offence_yellow_card'
                slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
                values[f"sampling/{HEAD_METRIC_PREFIX[head]}/{slug}"] = float(p)
        values["sampling/balance_fraction"] = float(sampler.balance_fraction(epoch))
        pl_module.log_dict(values, on_step=False, on_epoch=True)


def build_sampling_callback(cfg: DictConfig) -> SamplingScheduleCallback | None:
    return SamplingScheduleCallback() if cfg.sampling.use_class_balanced_sampler else None
