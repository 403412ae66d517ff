"""``experiment.resume``: ``null`` starts a new run; ``auto`` continues this run folder's
``checkpoints/last.ckpt`` (a new run where there is none); a path continues that checkpoint, and
the new run folder takes over its epoch history, ``metrics.csv`` rows and ranked checkpoints."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mvfoul.errors import MvfoulError
from mvfoul.training.checkpoints import CHECKPOINTS_DIR, LAST_NAME, read_checkpoint, require_keys
from mvfoul.training.summary import METRICS_FILE, read_metrics_csv
from mvfoul.validate import Problems, cross_key_rule

log = logging.getLogger(__name__)

# Keys a resumed run may change without changing what it computes (where the data lies, how it
# is loaded, how long to train).
_FREE_TO_CHANGE = set(
    "experiment.resume training.max_epochs dataset.data_dir dataset.cache_dir dataset.num_workers "
    "dataset.pin_memory dataset.persistent_workers dataset.prefetch_factor dataset.decoder "
    "experiment.use_wandb experiment.tags experiment.test_after_fit system.gpus system.num_nodes "
    "system.strategy".split()
)


@dataclass
class ResumePoint:
    path: Path
    epoch: int  # epochs completed in it
    global_step: int
    config: dict[str, Any]  # the config the checkpoint was trained with
    history: dict[int, dict[str, float]]
    source_run: Path | None  # the run folder it belongs to, when it lies in one

    def metrics_rows(self) -> list[dict[str, Any]]:
        """The metrics.csv rows of the epochs before this checkpoint: from the run folder it lies
        in, else rebuilt from its per-epoch history."""
        csv = self.source_run / "csv" / METRICS_FILE if self.source_run else None
        rows: list[dict[str, Any]] = []
        if csv is not None and csv.is_file():
            for row in read_metrics_csv(csv):
                # The LR monitor's rows have no epoch: placed by their step (logged at an epoch's
                # first step, which a resumed epoch logs again).
                if row.get("epoch"):
                    before = int(float(row["epoch"])) < self.epoch
                else:
                    before = bool(row.get("step")) and int(float(row["step"])) < self.global_step
                if before:
                    rows.append(row)
            return rows
        steps = self.global_step // self.epoch if self.epoch else 0
        for epoch, metrics in sorted(self.history.items()):
            if epoch < self.epoch:
                rows.append({"epoch": epoch, **metrics})
                if steps:
                    rows[-1]["step"] = (epoch + 1) * steps - 1
        return rows


def resolve_resume(setting: str | None, run_dir: Path) -> ResumePoint | None:
    """The checkpoint ``experiment.resume`` (checked by :func:`check_resume_setting`) asks for in
    ``run_dir``, or None for a new run."""
    if setting is None:
        return None
    path = run_dir / CHECKPOINTS_DIR / LAST_NAME
    if setting != "auto":
        path = Path(setting).expanduser()
    elif not path.is_file():
        log.info("experiment.resume=auto: no %s yet: starting a new run in %s", path, run_dir)
        return None
    checkpoint = read_checkpoint(path, key="experiment.resume", mmap=True)
    required = ("epoch", "global_step", "loops", "hyper_parameters.config")
    require_keys(checkpoint, path, required, key="experiment.resume")
    callbacks = checkpoint.get("callbacks", {})  # by state key: EpochHistory's is its class name
    history = callbacks.get("EpochHistory", {}).get("epochs", {})
    parent = path.resolve().parent
    try:
        # The epochs it had started: for last.ckpt (between epochs) its "epoch"; a ranked
        # checkpoint, written at validation end, belongs to an epoch counted as done once restored.
        epoch = int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["started"])
    except (KeyError, TypeError):
        epoch = int(checkpoint["epoch"])
    point = ResumePoint(
        path=path,
        epoch=epoch,
        global_step=int(checkpoint["global_step"]),
        config=checkpoint["hyper_parameters"]["config"],
        history={int(e): dict(m) for e, m in history.items()},
        source_run=parent.parent if parent.name == CHECKPOINTS_DIR else None,
    )
    log.info("resuming from %s: %d epoch(s), %d step(s) done", path, point.epoch, point.global_step)
    return point


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def check_resumed_config(point: ResumePoint, config: dict[str, Any]) -> None:
    """Refuse a model that cannot take the checkpoint's weights; warn about other changed keys."""
    before = _flatten(point.config)
    after = _flatten(config)
    changes = [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if key not in _FREE_TO_CHANGE and before.get(key) != after.get(key)
    ]
    model_changes = [c for c in changes if c.startswith("model.")]
    if model_changes:
        raise MvfoulError(
            f"experiment.resume: {point.path} was trained with another model ({'; '.join(model_changes)}); "
            "resume with the run's own model settings, or start a new run"
        )
    planned = point.config.get("training", {}).get("max_epochs")
    training = config["training"]
    if planned not in (None, training["max_epochs"]) and training["scheduler"] != "none":
        log.warning(
            "resume: training.max_epochs %s -> %s: the learning-rate schedule comes back from the checkpoint as "
            "it was planned, for %s epochs",
            planned,
            training["max_epochs"],
            planned,
        )
    if changes:
        log.warning(
            "resume: %d setting(s) differ from the checkpoint's run, so the result is not the uninterrupted run's: %s",
            len(changes),
            "; ".join(changes),
        )


@cross_key_rule("experiment")
def check_resume_setting(cfg: DictConfig, p: Problems) -> None:
    resume = cfg.experiment.get("resume")
    if resume not in (None, "auto") and not Path(str(resume)).expanduser().is_file():
        p.add(
            "experiment.resume",
            f"{resume!r} is not a file: give a checkpoint (e.g. <run>/checkpoints/last.ckpt), "
            "auto (this run folder's last.ckpt) or null",
        )
