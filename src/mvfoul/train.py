"""One training run, from a composed config to checkpoints and a printed summary."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, read_write

from mvfoul.data.datamodule import worker_death_message
from mvfoul.errors import DataError, DivergenceError
from mvfoul.losses import resolve_label_smoothing
from mvfoul.rules import validate_config, with_schema
from mvfoul.run_folder import is_secondary_process
from mvfoul.runtime import hydra_run_dir, quiet_library_noise
from mvfoul.slurm import requeued_slurm_job

log = logging.getLogger(__name__)


@rank_zero_only
def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Validation metrics (last epoch, percent)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(summary["final_metrics"].items()):
        if name.startswith("val/"):
            table.add_row(name, f"{value:.2f}")
    console = Console()
    console.print(table)
    best = summary["best"]
    value = "n/a" if best["value"] is None else f"{best['value']:.4f}"
    checkpoint = best["checkpoint"] or "none"
    elapsed = summary["wall_time_s"]
    # soft_wrap: a long path stays on one line, so the command can be copied as printed.
    line = f"best {summary['monitor']}: {value}  checkpoint: {checkpoint}  ({elapsed:.0f} s)"
    console.print(line, soft_wrap=True)
    if summary["evaluate_command"]:
        line = f"evaluate it: {summary['evaluate_command']}"
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def apply_automatic_changes(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Settings mvfoul changes by rule; each is logged once and recorded in summary.json."""
    smoothing = resolve_label_smoothing(cfg.loss, cfg.sampling)
    if not smoothing.reason:
        return {}
    log.info(smoothing.reason)
    cfg.loss.label_smoothing = smoothing.effective
    return {"loss.label_smoothing": dataclasses.asdict(smoothing)}


@contextmanager
def ddp_children_for_this_job(world_size: int) -> Iterator[None]:
    """In a ``--multirun`` job, make Lightning's DDP launcher start this job's processes, once.

    The launcher starts the other ranks by rerunning ``sys.argv`` into ``hydra.run.dir``. In a
    sweep that argv is the sweep's own, so each child would launch the whole sweep again (Hydra
    issue 2070), and ``run.dir`` is not the job's folder; and the variables the launcher leaves
    (``LOCAL_RANK``...) would make the next job wait for ranks that never come. So: the job's own
    command (config name and path, its overrides) and folder, and the environment put back after.
    """
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if world_size <= 1 or not multirun:
        yield
        return
    hydra_cfg: Any = HydraConfig.get()
    keep: list[str] = []
    words = iter(sys.argv[1:])
    for word in words:
        if word in ("--config-path", "-cp", "--config-dir", "-cd", "--config-name", "-cn"):
            keep += [word, next(words, "")]
        elif word.startswith(("--config-path=", "--config-dir=", "--config-name=")):
            keep.append(word)
    saved_argv = sys.argv
    saved_run_dir = hydra_cfg.run.dir
    # What Lightning's DDP launcher sets in the launching process's environment.
    launcher_variables = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
    saved_env = {name: os.environ[name] for name in launcher_variables if name in os.environ}
    sys.argv = [sys.argv[0], *keep, *[str(o) for o in hydra_cfg.overrides.task]]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = saved_run_dir
        for name in launcher_variables:
            os.environ.pop(name, None)
        os.environ.update(saved_env)


def train(cfg: DictConfig) -> float | None:
    """Validate ``cfg``, train, and return the best value of ``experiment.monitor``."""
    started = time.monotonic()
    if is_secondary_process():
        # Rank zero speaks: the other DDP processes log warnings and errors only.
        logging.getLogger().setLevel(logging.WARNING)
    cfg = with_schema(cfg)
    resolved = validate_config(cfg)

    # Imported after validation so that a bad config fails before the heavy imports.
    import torch.distributed as dist

    from mvfoul.data.datamodule import MultiViewDataModule
    from mvfoul.training.checkpoints import BEST_LINK, CHECKPOINTS_DIR, LAST_NAME, evaluate_command
    from mvfoul.training.module import MultiViewFoulModule
    from mvfoul.training.resume import check_resumed_config, resolve_resume
    from mvfoul.training.summary import (
        EpochHistory,
        git_commit,
        plot_training_curves,
        write_summary,
    )
    from mvfoul.training.trainer import build_loggers, build_trainer

    quiet_library_noise()
    run_dir = hydra_run_dir()
    # A job SLURM requeued (training.callbacks.SlurmRequeue) continues its run by default.
    resume_value = cfg.experiment.resume
    restarts = requeued_slurm_job()
    if resume_value is None and restarts:
        log.info(
            "SLURM restarted this job (%d time(s)): continuing its run (experiment.resume=auto)",
            restarts,
        )
        resume_value = "auto"
    resume = resolve_resume(resume_value, run_dir)
    L.seed_everything(cfg.system.seed, workers=True, verbose=False)
    changes = apply_automatic_changes(cfg)
    # The normalisation the run feeds goes into its config, so its checkpoints carry it.
    if cfg.dataset.mean is None or cfg.dataset.std is None:
        log.info(
            "input normalisation of %s (its weights' own): mean %s, std %s",
            cfg.model.backbone,
            list(resolved.mean),
            list(resolved.std),
        )
    cfg.dataset.mean = list(resolved.mean)
    cfg.dataset.std = list(resolved.std)
    # The checkpoint carries the effective config: what the model was really trained with.
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if resume is not None:
        check_resumed_config(resume, config)
    datamodule = MultiViewDataModule(
        cfg.dataset,
        resolved.frame_indices,
        cfg.sampling,
        seed=cfg.system.seed,
        first_epoch=resume.epoch if resume else 0,
    )
    module = MultiViewFoulModule(config)
    history = EpochHistory()
    loggers = build_loggers(cfg.experiment, run_dir, config)
    if resume is not None:
        loggers[0].continue_from(resume.metrics_rows())  # type: ignore[attr-defined]
    trainer = build_trainer(cfg, run_dir, config, history=history, loggers=loggers)

    def summary_of(status: str, **fields: Any) -> dict[str, Any]:
        """summary.json up to its wall time: what every run records, ``fields``, the curves."""
        best_epoch, best_value = history.best(cfg.experiment.monitor, cfg.experiment.mode)
        resumed = {"checkpoint": str(resume.path), "epochs_done": resume.epoch} if resume else None
        title = f"{cfg.experiment.name}: {run_dir.name}"
        curves = plot_training_curves(history.epochs, run_dir / "training_curves.png", title)
        return {
            "experiment": cfg.experiment.name,
            "run_dir": str(run_dir),
            "monitor": cfg.experiment.monitor,
            "mode": cfg.experiment.mode,
            "best": {"value": best_value, "epoch": best_epoch, "checkpoint": None},
            "epochs_completed": len(history.epochs),
            "history": {str(e): m for e, m in sorted(history.epochs.items())},
            "effective": changes,
            "resumed_from": resumed,
            **git_commit(),
            "status": status,
            **fields,
            "training_curves": str(curves) if curves else None,
        }

    log.info("run folder: %s", run_dir)
    fit_started = time.monotonic()
    try:
        with ddp_children_for_this_job(trainer.world_size):
            # weights_only: a checkpoint is data, never code to unpickle (mvfoul's hold nothing else).
            trainer.fit(
                module,
                datamodule=datamodule,
                ckpt_path=str(resume.path) if resume else None,
                weights_only=True,
            )
            fit_time = time.monotonic() - fit_started
            # Every rank leaves the process group: rank zero then tests the best checkpoint and
            # writes the summary alone, and a new Trainer there must not wait for finished ranks.
            if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
                trainer.strategy.barrier("mvfoul.fit_done")
                dist.destroy_process_group()
    except DivergenceError as err:
        if trainer.is_global_zero:
            # The ranked checkpoints (if any) predate the divergence: they hold finite weights.
            summary = summary_of("diverged", stopped=str(err))
            summary["wall_time_s"] = round(time.monotonic() - started, 1)
            write_summary(run_dir / "summary.json", summary)
        raise
    except RuntimeError as err:
        message = worker_death_message(err, cfg.dataset.num_workers)
        if message is None:
            raise
        raise DataError(message) from None

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    _, best_value = history.best(cfg.experiment.monitor, cfg.experiment.mode)
    if not trainer.is_global_zero:
        return best_value
    best_path = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
    if best_path and not Path(best_path).is_file():
        best_path = ""
    last = run_dir / CHECKPOINTS_DIR / LAST_NAME
    summary = summary_of(
        "completed",
        best_link=str(run_dir / CHECKPOINTS_DIR / BEST_LINK) if best_path else None,
        evaluate_command=evaluate_command(best_path) if best_path else None,
        last_checkpoint=str(last) if last.is_file() else None,
        final_metrics=metrics,
    )
    summary["best"]["checkpoint"] = best_path or None
    if (
        cfg.experiment.test_after_fit
        and not cfg.experiment.fast_dev_run
        and datamodule.has_split("test")
    ):
        from mvfoul.evaluation.evaluate import evaluate_checkpoint

        # The best checkpoint, or the final weights when none was kept.
        model = MultiViewFoulModule.from_checkpoint(best_path) if best_path else module.eval()
        result = evaluate_checkpoint(model, cfg, resolved.frame_indices, "test", run_dir)
        which = "best checkpoint" if best_path else "final weights"
        log.info("test (%s): %s", which, result.summary())
        files = [str(p) for p in result.files]
        summary["test"] = {
            "checkpoint": best_path or None,
            "metrics": result.metrics,
            "files": files,
        }
    summary["fit_time_s"] = round(fit_time, 2)
    summary["wall_time_s"] = round(time.monotonic() - started, 1)
    write_summary(run_dir / "summary.json", summary)
    print_summary(summary)
    return best_value
