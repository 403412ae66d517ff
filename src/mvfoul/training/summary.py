"""What a run leaves behind besides checkpoints: ``csv/metrics.csv``, the per-epoch history,
``summary.json`` and the training curves."""

from __future__ import annotations

import csv
import io
import math
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from mvfoul import atomic
from mvfoul.paths import PROJECT_ROOT
from mvfoul.training.loggers import ThrottledSave

METRICS_FILE = "metrics.csv"


def read_metrics_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


class _AtomicWriter(ExperimentWriter):
    """Lightning's writer deletes an existing ``metrics.csv`` and appends in place; this one keeps
    every row in memory (a few hundred for 100 epochs) and rewrites the file atomically."""

    def __init__(self, log_dir: str, initial_rows: list[dict[str, Any]]) -> None:
        super().__init__(log_dir)
        self._rows = list(initial_rows)
        if self._rows:
            self._write()

    def _check_log_dir_exists(self) -> None:
        pass  # a resumed run continues the existing metrics.csv

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
    """``<run>/csv/metrics.csv`` and ``hparams.yaml``, atomic, resumable and throttled."""

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


class EpochHistory(Callback):
    """Every epoch's epoch-level metrics, checkpointed. Lightning reduces them after the epoch-end
    hooks: validation metrics are read in ``on_validation_end``, training ones after the epoch."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, float]] = {}
        self._pending_train_epoch: int | None = None

    def _record(self, trainer: L.Trainer, epoch: int, prefix: str) -> None:
        row = self.epochs.setdefault(epoch, {})
        for name, value in trainer.callback_metrics.items():
            if name.startswith(prefix) and not name.endswith("_step") and value.numel() == 1:
                row[name.removesuffix("_epoch")] = float(value)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, trainer.current_epoch, "val/")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending_train_epoch is not None:
            self._record(trainer, self._pending_train_epoch, "train/")
            self._pending_train_epoch = None

    on_train_end = on_train_epoch_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending_train_epoch = trainer.current_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": {int(e): dict(m) for e, m in self.epochs.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = {int(e): dict(m) for e, m in state_dict.get("epochs", {}).items()}
        self._pending_train_epoch = None

    def best(self, monitor: str, mode: str) -> tuple[int | None, float | None]:
        """(epoch, value) of the best monitored value; NaN epochs never win."""
        scored = [(m.get(monitor, math.nan), e) for e, m in self.epochs.items()]
        scored = [(value, e) for value, e in scored if not math.isnan(value)]
        if not scored:
            return None, None
        pick = max if mode == "max" else min
        value, epoch = pick(scored, key=lambda item: item[0])
        return epoch, value


def git_commit() -> dict[str, Any]:
    """The project's commit and whether the tree had local changes (None outside a checkout)."""
    options: dict[str, Any] = dict(cwd=PROJECT_ROOT, text=True, timeout=5, stderr=subprocess.PIPE)
    try:
        commit = subprocess.check_output(["git", "rev-parse", "HEAD"], **options).strip()
        dirty = subprocess.check_output(
            ["git", "status", "--porcelain", "--untracked-files=no"], **options
        )
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(dirty.strip())}


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """``summary.json``: strict JSON (a NaN metric is ``null``), written atomically."""
    atomic.write_json(path, summary)


# Panels of the training-curves figure: title -> metric names (without the stage prefix).
CURVE_PANELS = {
    "loss": ("loss",),
    "offence + severity (%)": ("sev_acc", "sev_bacc"),
    "action (%)": ("action_acc", "action_bacc"),
    "leaderboard (%)": ("leaderboard",),
}


def plot_training_curves(
    history: dict[int, dict[str, float]], path: Path, title: str = ""
) -> Path | None:
    """Loss and the main metrics per epoch, train and validation, as one PNG (None: no epochs)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed (servers, CI)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(4.2 * len(CURVE_PANELS), 3.6))
    for ax, (panel, names) in zip(axes, CURVE_PANELS.items()):
        # One colour per metric: dashed for training, solid for validation.
        for colour, name in zip(("tab:blue", "tab:orange"), names):
            for stage, style in (("train", "--"), ("val", "-")):
                key = f"{stage}/{name}"
                epochs = [epoch for epoch in sorted(history) if key in history[epoch]]
                values = [history[epoch][key] for epoch in epochs]
                if epochs:
                    ax.plot(
                        epochs, values, style, color=colour, marker="o", markersize=3, label=key
                    )
        ax.set(title=panel, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
