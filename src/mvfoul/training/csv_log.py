"""``csv/metrics.csv``: Lightning's CSV logger, written atomically and continued by a resumed run.

Lightning's writer deletes an existing ``metrics.csv`` when it starts and appends in place. This
one keeps every row in memory (a few hundred for a 100-epoch run) and rewrites the whole file
atomically on each save, so a kill mid-write never leaves a broken file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from mvfoul import atomic
from mvfoul.training.loggers import ThrottledSave

METRICS_FILE = "metrics.csv"


def read_metrics_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


class _AtomicWriter(ExperimentWriter):
    def __init__(self, log_dir: str, initial_rows: list[dict[str, Any]]) -> None:
        super().__init__(log_dir)
        self._rows = list(initial_rows)
        if self._rows:
            self._write()

    def _check_log_dir_exists(self) -> None:
        pass  # Lightning's deletes an existing metrics.csv, which a resumed run continues

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        text = yaml.safe_dump(atomic.strict_json_value(self.hparams), sort_keys=False)
        atomic.write_text(Path(self.log_dir) / self.NAME_HPARAMS_FILE, text)

    def save(self) -> None:
        if self.metrics:
            self._rows += self.metrics
            self.metrics = []
            self._write()

    def _write(self) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=sorted({k for row in self._rows for k in row}))
        writer.writeheader()
        writer.writerows(self._rows)
        atomic.write_text(self.metrics_file_path, out.getvalue(), durable=False)


class RunCSVLogger(ThrottledSave, CSVLogger):
    """``<run>/csv/metrics.csv`` (and ``hparams.yaml``), atomic and resumable; written at most every
    few seconds (:mod:`mvfoul.training.loggers`)."""

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
