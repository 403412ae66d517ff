"""``csv/metrics.csv``: Lightning's CSV logger, written atomically and continued by a resumed run.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts and appends to the file
in place. mvfoul's keeps every row in memory and rewrites the whole file atomically on each save
(a few hundred rows for a 100-epoch run), so a kill mid-write never leaves a broken file, and a
resumed run starts from the rows the interrupted run logged up to its checkpoint
(:meth:`RunCSVLogger.continue_from`): those of the completed epochs, without the rows of the epoch
that was cut short, which the resumed run logs again.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from mvfoul import atomic
from mvfoul.training.loggers import ThrottledSave

METRICS_FILE = "metrics.csv"


def read_metrics_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def rows_before(
    rows: Iterable[dict[str, Any]], epoch: int, global_step: int
) -> list[dict[str, Any]]:
    """The rows logged before the state of (completed ``epoch`` epochs, ``global_step`` steps).

    Rows with an ``epoch`` belong to it; the LR monitor's rows have none and are placed by their
    step (they are logged at an epoch's first step, which a resumed epoch logs again)."""
    kept = []
    for row in rows:
        row_epoch = row.get("epoch")
        if row_epoch not in (None, ""):
            if int(float(str(row_epoch))) < epoch:
                kept.append(row)
        elif row.get("step") not in (None, "") and int(float(str(row["step"]))) < global_step:
            kept.append(row)
    return kept


def history_rows(
    history: dict[int, dict[str, float]], steps_per_epoch: int | None = None
) -> list[dict[str, Any]]:
    """Epoch-level rows rebuilt from a checkpoint's per-epoch history (when the run folder the
    checkpoint came from, and its metrics.csv, are not at hand)."""
    rows = []
    for epoch in sorted(history):
        row: dict[str, Any] = {"epoch": epoch, **history[epoch]}
        if steps_per_epoch:
            row["step"] = (epoch + 1) * steps_per_epoch - 1
        rows.append(row)
    return rows


class _AtomicWriter(ExperimentWriter):
    def __init__(self, log_dir: str, initial_rows: list[dict[str, Any]]) -> None:
        # Not ExperimentWriter.__init__'s check: it deletes an existing metrics.csv.
        self.hparams: dict[str, Any] = {}
        self.metrics: list[dict[str, Any]] = []
        self.log_dir = log_dir
        self.metrics_file_path = str(Path(log_dir) / METRICS_FILE)
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self._rows: list[dict[str, Any]] = list(initial_rows)
        self.metrics_keys: list[str] = sorted({k for row in self._rows for k in row})
        if self._rows:
            self._write()

    def log_hparams(self, params: dict[str, Any]) -> None:
        import yaml

        self.hparams.update(params)
        atomic.write_text(
            Path(self.log_dir) / self.NAME_HPARAMS_FILE,
            yaml.safe_dump(_plain(self.hparams), sort_keys=False),
        )

    def save(self) -> None:
        if not self.metrics:
            return
        self._rows += self.metrics
        self.metrics = []
        self.metrics_keys = sorted({k for row in self._rows for k in row})
        self._write()

    def _write(self) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(self._rows)
        atomic.write_text(self.metrics_file_path, out.getvalue(), durable=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunCSVLogger(ThrottledSave, CSVLogger):
    """``<run>/csv/metrics.csv`` (and ``hparams.yaml``), atomic and resumable; written at most every few
    seconds (:mod:`mvfoul.training.loggers`)."""

    def __init__(self, save_dir: str | Path) -> None:
        super().__init__(save_dir=str(save_dir), name="csv", version="")
        self._initial_rows: list[dict[str, Any]] = []

    def continue_from(self, rows: list[dict[str, Any]]) -> None:
        """Start from these rows (a resumed run's earlier epochs) instead of an empty file."""
        self._initial_rows = list(rows)

    @property
    @rank_zero_experiment
    def experiment(self) -> _AtomicWriter:
        if self._experiment is None:
            self._experiment = _AtomicWriter(self.log_dir, self._initial_rows)
        return self._experiment  # type: ignore[return-value]
