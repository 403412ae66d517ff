"""One training run, from a composed config to checkpoints and a printed summary."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mvfoul.losses import resolve_label_smoothing
from mvfoul.validate import validate_config, with_schema

log = logging.getLogger(__name__)


def silence_known_noise() -> None:
    # Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def route_lightning_logs_through_root() -> None:
    """Let Lightning's messages reach the console once, in Hydra's format and log file.

    The ``lightning`` package adds its own console handler on import and still propagates to
    the root logger, which Hydra has given a console handler too: every line would print twice.
    """
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if isinstance(handler, logging.StreamHandler):
                lightning_logger.removeHandler(handler)


def hydra_run_dir() -> Path:
    """The run folder Hydra made for this job (or ./outputs/manual outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    path = Path("outputs") / "manual" / time.strftime("%Y-%m-%d_%H-%M-%S")
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    from mvfoul.training.summary import EpochHistory, git_commit, write_summary
    from mvfoul.training.trainer import build_trainer

    route_lightning_logs_through_root()
    silence_known_noise()
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
    last_path = getattr(checkpoint, "last_model_path", "") or ""
    elapsed = time.monotonic() - started
    if trainer.is_global_zero:
        write_summary(
            run_dir / "summary.json",
            {
                "experiment": cfg.experiment.name,
                "run_dir": str(run_dir),
                "monitor": cfg.experiment.monitor,
                "mode": cfg.experiment.mode,
                "best": {"value": best_value, "epoch": best_epoch, "checkpoint": best_path or None},
                "last_checkpoint": last_path or None,
                "epochs_completed": len(history.epochs),
                "final_metrics": metrics,
                "history": {str(e): m for e, m in sorted(history.epochs.items())},
                "wall_time_s": round(elapsed, 1),
                "effective": changes,
                **git_commit(),
            },
        )
    print_summary(metrics, best_path, best_value, cfg.experiment.monitor, elapsed)
    return best_value
