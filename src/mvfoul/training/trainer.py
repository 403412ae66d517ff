"""Builds Lightning's Trainer from the ``system`` and ``experiment`` groups."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hardware:
    """What the run really uses, after falling back where the machine lacks something."""

    accelerator: str
    devices: int
    precision: str
    strategy: str
    num_nodes: int


def resolve_hardware(system: DictConfig, cuda_available: bool | None = None) -> Hardware:
    """Map ``system`` onto this machine: without CUDA, GPU runs fall back to CPU and fp32."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    wants_gpu = system.accelerator == "gpu" or (system.accelerator == "auto" and system.gpus > 0)
    if wants_gpu and cuda_available:
        return Hardware("gpu", max(1, system.gpus), system.precision, system.strategy, system.num_nodes)
    precision = system.precision
    if wants_gpu:
        log.warning(
            "no CUDA device: running on CPU in fp32 instead of system.accelerator=%s, system.precision=%s "
            "(use system=cpu to silence this)",
            system.accelerator,
            system.precision,
        )
        precision = "32-true"
    elif precision in ("16-mixed", "16"):
        # Lightning has no fp16 autocast on CPU.
        log.warning("system.precision=%s is not available on CPU: using 32-true", precision)
        precision = "32-true"
    return Hardware("cpu", 1, precision, "auto", 1)


LAST_CHECKPOINT = "last"  # checkpoints/last.ckpt: the latest epoch, for resuming


def checkpoint_filename(monitor: str) -> str:
    # The metric name holds a slash, which Lightning would turn into a sub-folder: keep the
    # slash out of the file name and insert the value under a flat label.
    label = monitor.replace("/", "_")
    return f"epoch{{epoch:03d}}-{label}={{{monitor}:.4f}}"


def build_callbacks(experiment: DictConfig, run_dir: Path) -> list[Callback]:
    best = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename=checkpoint_filename(experiment.monitor),
        auto_insert_metric_name=False,
        monitor=experiment.monitor,
        mode=experiment.mode,
        save_top_k=experiment.save_top_k,
        # Training metrics are logged after validation: rank them at the end of the epoch.
        save_on_train_epoch_end=experiment.monitor.startswith("train/"),
    )
    callbacks: list[Callback] = [best]
    if experiment.save_last:
        # Lightning's own save_last only refreshes last.ckpt when a top-k checkpoint is saved;
        # resuming needs the latest state every epoch, so a second, unmonitored checkpoint
        # keeps exactly one file: the latest.
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints", filename=LAST_CHECKPOINT, monitor=None, save_top_k=1,
                enable_version_counter=False,
            )
        )
    callbacks += [LearningRateMonitor(logging_interval="epoch"), RichProgressBar(leave=True)]
    return callbacks


def build_loggers(experiment: DictConfig, run_dir: Path, config: dict[str, Any]) -> list[Logger]:
    loggers: list[Logger] = [
        CSVLogger(save_dir=str(run_dir), name="csv", version=""),
        TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False),
    ]
    if experiment.use_wandb:
        from lightning.pytorch.loggers import WandbLogger

        # Offline unless credentials exist, so a run never blocks on a login prompt or network.
        has_credentials = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
        loggers.append(
            WandbLogger(
                project=experiment.wandb_project,
                name=experiment.name,
                tags=list(experiment.tags),
                save_dir=str(run_dir),
                offline=not has_credentials or os.environ.get("WANDB_MODE") == "offline",
                config=config,
            )
        )
    return loggers


def _batch_limit(value: int | float) -> int | float | None:
    # None is Lightning's "no limit"; an explicit 1.0 only makes it log a needless notice.
    return None if isinstance(value, float) and value == 1.0 else value


def build_trainer(
    cfg: DictConfig, run_dir: Path, config: dict[str, Any], extra_callbacks: list[Callback] = ()
) -> L.Trainer:
    from mvfoul.training.balancing import build_sampling_callback
    from mvfoul.training.freezing import build_freezing_callback, ddp_unfreezing_problem

    hw = resolve_hardware(cfg.system)
    problem = ddp_unfreezing_problem(hw.strategy, cfg, devices=hw.devices * hw.num_nodes)
    if problem:
        log.warning(problem)
    # Freezing first: it may boost the backbone LR at an epoch start, and LearningRateMonitor
    # (in build_callbacks) should log the LR the epoch really uses.
    scheduling = [c for c in (build_freezing_callback(cfg), build_sampling_callback(cfg)) if c is not None]
    callbacks = scheduling + build_callbacks(cfg.experiment, run_dir) + list(extra_callbacks)
    e, t = cfg.experiment, cfg.training
    clip = t.gradient_clip_val if t.gradient_clip_val else None
    return L.Trainer(
        accelerator=hw.accelerator,
        devices=hw.devices,
        num_nodes=hw.num_nodes,
        strategy=hw.strategy,
        precision=hw.precision,
        max_epochs=t.max_epochs,
        gradient_clip_val=clip,
        accumulate_grad_batches=t.accumulate_grad_batches,
        deterministic=cfg.system.deterministic,
        callbacks=callbacks,
        logger=build_loggers(e, run_dir, config),
        log_every_n_steps=e.log_every_n_steps,
        fast_dev_run=e.fast_dev_run,
        limit_train_batches=_batch_limit(e.limit_train_batches),
        limit_val_batches=_batch_limit(e.limit_val_batches),
        detect_anomaly=e.debug,
        default_root_dir=str(run_dir),
        enable_model_summary=True,
    )
