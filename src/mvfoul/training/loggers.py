"""How often the loggers write their files. Lightning saves every logger after each logging step,
4% of a fast step's time (``benchmarks/train_step.py``); here at most every ``SAVE_INTERVAL_S``
seconds, and in full before every ``last.ckpt`` (a resumed run takes the rows up to it), a SLURM
requeue and the run's end. A killed run loses a few seconds of step rows, logged again on resume."""

from __future__ import annotations

import importlib.util
import time

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from mvfoul.validate import Problems, cross_key_rule

SAVE_INTERVAL_S = 5.0


class ThrottledSave:
    """Mixin for a Lightning logger: ``flush()`` and ``finalize()`` always write."""

    _last_save = 0.0

    def save(self) -> None:
        if time.monotonic() - self._last_save >= SAVE_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        self._last_save = time.monotonic()
        super().save()  # type: ignore[misc]

    def finalize(self, status: str) -> None:
        self.flush()
        super().finalize(status)  # type: ignore[misc]


class RunTensorBoardLogger(ThrottledSave, TensorBoardLogger):
    """``<run>/tensorboard/``."""


def flush_loggers(trainer: L.Trainer) -> None:
    """Write every logger's files now (rank zero does the writing)."""
    for logger in trainer.loggers:
        getattr(logger, "flush", logger.save)()  # loggers without ThrottledSave just save


@cross_key_rule("experiment")
def check_loggers(cfg: DictConfig, p: Problems) -> None:
    """Each logger named once, and its package installed, before the run starts."""
    experiment = cfg.experiment
    if experiment.use_wandb and importlib.util.find_spec("wandb") is None:
        p.add(
            "experiment.use_wandb",
            "true needs the wandb package: pip install -e '.[wandb]', or set experiment.use_wandb=false",
        )
    loggers = list(experiment.get("loggers", []))
    if len(set(loggers)) != len(loggers):
        p.add("experiment.loggers", f"{loggers} names a logger twice")
    for name, package in (
        ("wandb", "wandb (pip install -e '.[wandb]')"),
        ("mlflow", "mlflow (pip install mlflow)"),
    ):
        if name in loggers and importlib.util.find_spec(name) is None:
            p.add("experiment.loggers", f"{name} needs the {package} package, or leave it out")
