"""How often the loggers write their files.

Lightning calls every logger's ``save()`` after each logging step (``experiment.log_every_n_steps``).
mvfoul's ``metrics.csv`` is rewritten whole and atomically, and TensorBoard flushes its event
file: on a fast step (the tiny model on a CPU) that was 4% of the training time
(``benchmarks/train_step.py``). The loggers here write at most every ``SAVE_INTERVAL_S`` seconds,
and in full whenever mvfoul needs the files current: before every ``last.ckpt`` (a resumed run
takes the rows up to its checkpoint), before a SLURM requeue, and at the end of the run. A run
killed outright loses at most the last few seconds of step rows, which it logs again when resumed.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

SAVE_INTERVAL_S = 5.0


class ThrottledSave:
    """Mixin for a Lightning logger: ``save()`` writes at most every ``SAVE_INTERVAL_S`` seconds;
    ``flush()`` and ``finalize()`` always write."""

    _last_save = 0.0

    def save(self) -> None:
        now = time.monotonic()
        if now - self._last_save >= SAVE_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        self._last_save = time.monotonic()
        super().save()  # type: ignore[misc]

    def finalize(self, status: str) -> None:
        self.flush()
        super().finalize(status)  # type: ignore[misc]


class RunTensorBoardLogger(ThrottledSave, TensorBoardLogger):
    """``<run>/tensorboard/``: Lightning's TensorBoard logger, flushed as described above."""


def flush_loggers(trainer: L.Trainer) -> None:
    """Write every logger's files now (rank zero does the writing)."""
    for logger in trainer.loggers:
        flush: Any = getattr(logger, "flush", logger.save)
        flush()
