"""What a run leaves behind besides checkpoints: per-epoch history and ``summary.json``."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from mvfoul import atomic
from mvfoul.paths import PROJECT_ROOT


class EpochHistory(Callback):
    """Every epoch's epoch-level metrics, by epoch (train and validation).

    Lightning reduces epoch metrics after the epoch-end hooks have run, so each is read in the
    first hook that sees it: validation metrics in ``on_validation_end``, an epoch's training
    metrics when the next epoch starts or training ends. The history is part of every checkpoint,
    so a resumed run's summary and curves cover the epochs before the resume.
    """

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
        values = {e: m.get(monitor, math.nan) for e, m in self.epochs.items()}
        scored = [(value, e) for e, value in values.items() if not math.isnan(value)]
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
        for colour, name in zip(("tab:blue", "tab:orange"), names):
            # One colour per metric: dashed for training, solid for validation.
            for stage, style in (("train", "--"), ("val", "-")):
                key = f"{stage}/{name}"
                epochs = [epoch for epoch in sorted(history) if key in history[epoch]]
                if epochs:
                    values = [history[epoch][key] for epoch in epochs]
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
