"""``experiment.resume``: which checkpoint a run continues from, and what it brings along.

* ``null`` (default): a new run.
* ``auto``: ``<run folder>/checkpoints/last.ckpt`` of this run's own folder (``hydra.run.dir``),
  continued in that folder; without one, a new run (one log line says so). ``python -m
  mvfoul.runs resume RUN_DIR`` reruns a run's own command this way.
* a path: that checkpoint. The new run folder then takes over the per-epoch history (in the
  checkpoint), the ``metrics.csv`` rows up to the checkpoint (from the run folder it lies in,
  else rebuilt from that history) and the ranked checkpoints (linked in).

Lightning restores the weights, optimiser, schedulers, gradient scaler, loop progress and every
callback's state (unfreezing, the LR boost, the ranking); the random states and the epoch
history travel in the checkpoint too (:mod:`mvfoul.training.checkpoints`), and the samplers draw
each epoch from ``(seed, epoch)`` alone, so a resumed run continues exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvfoul.errors import MvfoulError
from mvfoul.training.checkpoints import CHECKPOINTS_DIR, LAST_NAME, read_checkpoint, require_keys
from mvfoul.training.csv_log import METRICS_FILE, history_rows, read_metrics_csv, rows_before

log = logging.getLogger(__name__)

AUTO = "auto"
HISTORY_KEY = "EpochHistory"  # the state key of mvfoul.training.summary.EpochHistory

# Keys a resumed run may change without changing what it computes (where the data lies, how it
# is loaded, how long to train).
_FREE_TO_CHANGE = (
    "experiment.resume",
    "training.max_epochs",
    "dataset.data_dir",
    "dataset.cache_dir",
    "dataset.num_workers",
    "dataset.pin_memory",
    "dataset.persistent_workers",
    "dataset.prefetch_factor",
    "dataset.decoder",
    "experiment.use_wandb",
    "experiment.tags",
    "experiment.test_after_fit",
    "system.gpus",
    "system.num_nodes",
    "system.strategy",
)


@dataclass
class ResumePoint:
    """A checkpoint a run continues from."""

    path: Path
    epoch: int  # epochs completed in it
    global_step: int
    config: dict[str, Any]  # the config the checkpoint was trained with
    history: dict[int, dict[str, float]] = field(default_factory=dict)
    source_run: Path | None = None  # the run folder it belongs to, when it lies in one

    def metrics_rows(self) -> list[dict[str, Any]]:
        """The metrics.csv rows of the epochs before this checkpoint."""
        if self.source_run is not None and (self.source_run / "csv" / METRICS_FILE).is_file():
            return rows_before(
                read_metrics_csv(self.source_run / "csv" / METRICS_FILE),
                self.epoch,
                self.global_step,
            )
        steps = self.global_step // self.epoch if self.epoch else None
        return history_rows({e: m for e, m in self.history.items() if e < self.epoch}, steps)


def resolve_resume(setting: str | None, run_dir: Path) -> ResumePoint | None:
    """The checkpoint ``experiment.resume`` asks for in ``run_dir``, or None for a new run."""
    if setting is None:
        return None
    if setting == AUTO:
        path = run_dir / CHECKPOINTS_DIR / LAST_NAME
        if not path.is_file():
            log.info("experiment.resume=auto: no %s yet: starting a new run in %s", path, run_dir)
            return None
    else:
        path = Path(setting).expanduser()
        if not path.is_file():
            raise MvfoulError(
                f"experiment.resume: {setting!r} is not a file; give a checkpoint (e.g. <run>/checkpoints/last.ckpt), "
                "auto (this run folder's last.ckpt), or null"
            )
    checkpoint = read_checkpoint(path, key="experiment.resume", mmap=True)
    require_keys(
        checkpoint,
        path,
        ("epoch", "global_step", "loops", "hyper_parameters.config"),
        key="experiment.resume",
    )
    history = checkpoint.get("callbacks", {}).get(HISTORY_KEY, {}).get("epochs", {})
    parent = path.resolve().parent
    source = parent.parent if parent.name == CHECKPOINTS_DIR else None
    point = ResumePoint(
        path=path,
        epoch=_first_epoch(checkpoint),
        global_step=int(checkpoint["global_step"]),
        config=checkpoint["hyper_parameters"]["config"],
        history={int(e): dict(m) for e, m in history.items()},
        source_run=source,
    )
    log.info("resuming from %s: %d epoch(s), %d step(s) done", path, point.epoch, point.global_step)
    return point


def _first_epoch(checkpoint: dict[str, Any]) -> int:
    """The epoch a run resumed from ``checkpoint`` starts with: the epochs it had started. For
    ``last.ckpt`` (written between epochs) that is its ``epoch``; a ranked checkpoint, written at
    validation end, belongs to an epoch Lightning counts as done once restored."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["started"])
    except (KeyError, TypeError):
        return int(checkpoint["epoch"])


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def changed_keys(trained: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: before -> now`` for each key whose value differs and shapes what the run computes."""
    before, after = _flatten(trained), _flatten(now)
    changes = []
    for key in sorted(set(before) | set(after)):
        if key in _FREE_TO_CHANGE or before.get(key) == after.get(key):
            continue
        changes.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
    return changes


def check_resumed_config(point: ResumePoint, config: dict[str, Any]) -> None:
    """Refuse a model that cannot take the checkpoint's weights; warn about other changed keys."""
    model_changes = [c for c in changed_keys(point.config, config) if c.startswith("model.")]
    if model_changes:
        raise MvfoulError(
            f"experiment.resume: {point.path} was trained with another model ({'; '.join(model_changes)}); "
            "resume with the run's own model settings, or start a new run"
        )
    planned = point.config.get("training", {}).get("max_epochs")
    wanted = config.get("training", {}).get("max_epochs")
    if (
        planned is not None
        and wanted != planned
        and config.get("training", {}).get("scheduler") != "none"
    ):
        log.warning(
            "resume: training.max_epochs %s -> %s: the learning-rate schedule comes back from the checkpoint as "
            "it was planned, for %s epochs",
            planned,
            wanted,
            planned,
        )
    others = changed_keys(point.config, config)
    if others:
        log.warning(
            "resume: %d setting(s) differ from the checkpoint's run, so the result is not the uninterrupted run's: %s",
            len(others),
            "; ".join(others),
        )
