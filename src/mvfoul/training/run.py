"""One training run, from a composed config to checkpoints and a printed summary."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mvfoul.losses import resolve_label_smoothing
from mvfoul.runtime import hydra_run_dir, quiet_library_noise
from mvfoul.validate import validate_config, with_schema

log = logging.getLogger(__name__)


@rank_zero_only
def print_summary(metrics: dict[str, float], best_path: str, best_score: float | None, monitor: str, elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Validation metrics (last epoch, percent)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        if name.startswith("val/"):
            table.add_row(name, f"{metrics[name]:.2f}")
    console = Console()
    console.print(table)
    best = "n/a" if best_score is None else f"{best_score:.4f}"
    console.print(f"best {monitor}: {best}  checkpoint: {best_path or 'none'}  ({elapsed:.0f} s)")


def apply_automatic_changes(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Settings mvfoul changes by rule; each is logged once and recorded in summary.json."""
    changes: dict[str, dict[str, Any]] = {}
    smoothing = resolve_label_smoothing(cfg.loss, cfg.sampling)
    if smoothing.reason:
        log.info(smoothing.reason)
        cfg.loss.label_smoothing = smoothing.effective
        changes["loss.label_smoothing"] = {
            "configured": smoothing.configured, "effective": smoothing.effective, "reason": smoothing.reason,
        }
    return changes


def train(cfg: DictConfig) -> float | None:
    """Validate ``cfg``, train, and return the best value of ``experiment.monitor``."""
    started = time.monotonic()
    cfg = with_schema(cfg)
    resolved = validate_config(cfg)

    # Imported after validation so that a bad config fails before the heavy imports.
    from mvfoul.data.datamodule import MultiViewDataModule
    from mvfoul.training.module import MultiViewFoulModule
    from mvfoul.training.summary import EpochHistory, git_commit, plot_training_curves, write_summary
    from mvfoul.training.trainer import build_trainer

    quiet_library_noise()
    L.seed_everything(cfg.system.seed, workers=True, verbose=False)
    run_dir = hydra_run_dir()
    changes = apply_automatic_changes(cfg)
    # The checkpoint carries the effective config: what the model was really trained with.
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    datamodule = MultiViewDataModule(cfg.dataset, resolved.frame_indices, cfg.sampling, seed=cfg.system.seed)
    module = MultiViewFoulModule(config)
    history = EpochHistory()
    trainer = build_trainer(cfg, run_dir, config, extra_callbacks=[history])
    log.info("run folder: %s", run_dir)
    trainer.fit(module, datamodule=datamodule)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    checkpoint = trainer.checkpoint_callback
    best_epoch, best_value = history.best(cfg.experiment.monitor, cfg.experiment.mode)
    best_path = getattr(checkpoint, "best_model_path", "") or ""
    last = run_dir / "checkpoints" / "last.ckpt"
    last_path = str(last) if last.is_file() else ""
    if not trainer.is_global_zero:
        return best_value
    summary: dict[str, Any] = {
        "experiment": cfg.experiment.name,
        "run_dir": str(run_dir),
        "monitor": cfg.experiment.monitor,
        "mode": cfg.experiment.mode,
        "best": {"value": best_value, "epoch": best_epoch, "checkpoint": best_path or None},
        "last_checkpoint": last_path or None,
        "epochs_completed": len(history.epochs),
        "final_metrics": metrics,
        "history": {str(e): m for e, m in sorted(history.epochs.items())},
        "effective": changes,
        **git_commit(),
    }
    curves = plot_training_curves(history.epochs, run_dir / "training_curves.png", f"{cfg.experiment.name}: {run_dir.name}")
    summary["training_curves"] = str(curves) if curves else None
    if cfg.experiment.test_after_fit and not cfg.experiment.fast_dev_run and datamodule.has_split("test"):
        summary["test"] = test_best_model(module, best_path, cfg, resolved.frame_indices, run_dir)
    summary["wall_time_s"] = round(time.monotonic() - started, 1)
    write_summary(run_dir / "summary.json", summary)
    print_summary(metrics, best_path, best_value, cfg.experiment.monitor, summary["wall_time_s"])
    return best_value


def test_best_model(module: Any, best_path: str, cfg: DictConfig, frame_indices: tuple[int, ...], run_dir: Path) -> dict[str, Any]:
    """Evaluate the best checkpoint (or the final weights when none was kept) on the test split,
    writing predictions, metrics and reports into the run folder."""
    from mvfoul.evaluation.evaluate import evaluate_checkpoint
    from mvfoul.training.module import MultiViewFoulModule

    model = MultiViewFoulModule.from_checkpoint(best_path) if best_path else module.eval()
    result = evaluate_checkpoint(model, cfg, frame_indices, "test", run_dir)
    log.info("test (%s): %s", "best checkpoint" if best_path else "final weights", result.summary())
    return {
        "checkpoint": best_path or None,
        "metrics": result.metrics,
        "files": [str(p) for p in result.files],
    }
