"""Builds Lightning's Trainer from the ``system`` and ``experiment`` groups."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, RichProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from mvfoul.errors import ConfigError
from mvfoul.slurm import on_slurm
from mvfoul.training.checkpoints import (
    CHECKPOINTS_DIR,
    AtomicCheckpointIO,
    LastCheckpoint,
    RankedCheckpoint,
    checkpoint_filename,
)
from mvfoul.training.csv_log import RunCSVLogger
from mvfoul.training.extensions import build_extra_callbacks, trainer_options
from mvfoul.training.guard import DivergenceGuard
from mvfoul.training.loggers import RunTensorBoardLogger
from mvfoul.training.preemption import SlurmRequeue, slurm_plugins
from mvfoul.validate import Problems, cross_key_rule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hardware:
    """What the run really uses, after falling back where the machine lacks something."""

    accelerator: str
    devices: int
    precision: str
    strategy: str
    num_nodes: int


def resolve_hardware(
    system: DictConfig, cuda_available: bool | None = None, gpu_count: int | None = None
) -> Hardware:
    """Map ``system`` onto this machine. ``system.gpus`` counts devices per node: GPUs, or with
    ``accelerator=cpu`` processes (more than one runs DDP over gloo). Without CUDA, a GPU config
    falls back to one fp32 CPU process, with one warning line."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    wants_gpu = system.accelerator == "gpu" or (system.accelerator == "auto" and system.gpus > 0)
    if wants_gpu and cuda_available:
        count = torch.cuda.device_count() if gpu_count is None else gpu_count
        if system.gpus > count:
            raise ConfigError(
                f"system.gpus: {system.gpus} GPUs per node asked for, this machine has {count}: set system.gpus={count} "
                "(or fewer)"
            )
        return Hardware(
            "gpu", max(1, system.gpus), system.precision, system.strategy, system.num_nodes
        )
    if wants_gpu:
        log.warning(
            "no CUDA device: running on CPU in fp32 instead of system.accelerator=%s, system.precision=%s "
            "(use system=cpu to silence this)",
            system.accelerator,
            system.precision,
        )
        return Hardware("cpu", 1, "32-true", "auto", 1)
    precision = system.precision
    if precision in ("16-mixed", "16"):
        # Lightning has no fp16 autocast on CPU.
        log.warning("system.precision=%s is not available on CPU: using 32-true", precision)
        precision = "32-true"
    processes = max(1, system.gpus)
    distributed = processes * system.num_nodes > 1
    return Hardware(
        "cpu", processes, precision, system.strategy if distributed else "auto", system.num_nodes
    )


class EpochMetricsOnEveryRank(Callback):
    """Lightning computes a ``sync_dist`` metric (an all-reduce) the first time anything reads the
    metrics. At a training epoch's end the first reader is the progress bar, on rank zero alone,
    while the other ranks go on to the module's own collectives: the run would hang. Reading them
    here first, on every rank in the same order, leaves the progress bar cached values."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            trainer.callback_metrics  # noqa: B018 - the read is the point


def apply_cpu_threads(system: DictConfig, hw: Hardware, num_workers: int) -> int | None:
    """On a CPU run, set torch's intra-op threads: ``system.num_threads``, or the cores left after
    the DataLoader workers of every process of this node, shared by the processes (at least 1).
    torch's default, one thread per core, competes with the workers decoding video on the same
    cores. GPU runs keep torch's default. Returns the count set (None when unchanged)."""
    if hw.accelerator != "cpu":
        return None
    # The cores this process may run on, as a cluster job sees them (macOS has no affinity).
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # pragma: no cover
        cores = os.cpu_count() or 1
    if system.num_threads is not None:
        threads = int(system.num_threads)
    else:
        threads = max(1, (cores - hw.devices * num_workers) // hw.devices)
    torch.set_num_threads(threads)
    log.info(
        "torch threads: %d per process (%d core(s), %d DataLoader worker(s) x %d process(es)%s)",
        threads,
        cores,
        num_workers,
        hw.devices,
        "; system.num_threads" if system.num_threads is not None else "",
    )
    return threads


class ThrottledProgressBar(RichProgressBar):
    """Lightning's rich progress bar, redrawn a few times a second rather than after every batch
    (and by a 100 Hz refresh thread): on the CPU, with the tiny model's ~12 ms steps, those redraws
    cost 7% of the training time (benchmarks/train_step.py)."""

    def __init__(self, redraws_per_second: int = 4) -> None:
        super().__init__(refresh_rate=redraws_per_second, leave=True)
        self._interval = 1.0 / redraws_per_second
        self._last_redraw = 0.0

    def _due(self, batch_idx: int, total: int | float) -> bool:
        now = time.monotonic()
        if now - self._last_redraw >= self._interval or batch_idx + 1 >= total:
            self._last_redraw = now
            return True
        return False

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self.is_disabled and self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # A disabled bar (DDP ranks other than zero) never learns which loader is running.
        if not self.is_disabled and self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(
                trainer, pl_module, outputs, batch, batch_idx, dataloader_idx
            )


def build_loggers(experiment: DictConfig, run_dir: Path, config: dict[str, Any]) -> list[Logger]:
    """``experiment.loggers``, plus wandb when ``experiment.use_wandb`` is true."""
    names = list(experiment.get("loggers", ["csv", "tensorboard"]))
    if experiment.use_wandb and "wandb" not in names:
        names.append("wandb")
    loggers: list[Logger] = []
    for name in names:
        if name == "csv":
            loggers.append(RunCSVLogger(run_dir))
        elif name == "tensorboard":
            loggers.append(
                RunTensorBoardLogger(
                    save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False
                )
            )
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            # Offline unless credentials exist, so a run never blocks on a login prompt or network.
            has_credentials = (
                bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
            )
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
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            # MLFLOW_TRACKING_URI picks a server; without it, a file store in the run folder.
            loggers.append(
                MLFlowLogger(
                    experiment_name=experiment.name,
                    tracking_uri=os.environ.get(
                        "MLFLOW_TRACKING_URI", f"file:{run_dir / 'mlruns'}"
                    ),
                    tags={tag: "" for tag in experiment.tags} or None,
                )
            )
    return loggers


def _batch_limit(value: int | float) -> int | float | None:
    # None is Lightning's "no limit"; an explicit 1.0 only makes it log a needless notice.
    return None if isinstance(value, float) and value == 1.0 else value


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    config: dict[str, Any],
    history: Callback | None = None,
    loggers: list[Logger] | None = None,
) -> L.Trainer:
    """The Trainer of a training run. Callbacks that act at an epoch start run in this order: the
    divergence guard (no broken weights reach a checkpoint), the epoch history (it files the
    finished epoch's training metrics), ``last.ckpt`` (the state at the end of the epoch), then
    unfreezing (it may boost the backbone LR, which LearningRateMonitor then logs) and sampling."""
    from mvfoul.training.balancing import build_sampling_callback
    from mvfoul.training.freezing import build_freezing_callback

    experiment = cfg.experiment
    training = cfg.training
    hw = resolve_hardware(cfg.system)
    world_size = hw.devices * hw.num_nodes
    strategy = ""
    if world_size > 1:
        backend = "nccl" if hw.accelerator == "gpu" else "gloo"
        strategy = f", strategy {hw.strategy} ({backend})"
    log.info(
        "world size %d: %d %s process(es) per node x %d node(s)%s",
        world_size,
        hw.devices,
        hw.accelerator.upper(),
        hw.num_nodes,
        strategy,
    )
    apply_cpu_threads(cfg.system, hw, cfg.dataset.num_workers)
    ranked = RankedCheckpoint(
        dirpath=run_dir / CHECKPOINTS_DIR,
        filename=checkpoint_filename(experiment.monitor),
        monitor=experiment.monitor,
        mode=experiment.mode,
        save_top_k=experiment.save_top_k,
        # Training metrics are logged after validation: rank them at the end of the epoch.
        save_on_train_epoch_end=experiment.monitor.startswith("train/"),
        # Without last.ckpt nothing refers to evicted files: delete them at once.
        defer_removals=experiment.save_last,
    )
    callbacks: list[Callback] = [EpochMetricsOnEveryRank()]
    if training.stop_on_divergence:
        callbacks.append(DivergenceGuard(training, hw.precision))
    if history is not None:
        callbacks.append(history)
    callbacks.append(
        LastCheckpoint(run_dir / CHECKPOINTS_DIR, ranked=ranked, save=experiment.save_last)
    )
    for optional in (build_freezing_callback(cfg), build_sampling_callback(cfg)):
        if optional is not None:
            callbacks.append(optional)
    if on_slurm():
        callbacks.append(SlurmRequeue())
    callbacks.extend(build_extra_callbacks(experiment))
    callbacks.append(ranked)
    logger = loggers if loggers is not None else build_loggers(experiment, run_dir, config)
    if logger:  # the learning-rate monitor writes to the loggers, and refuses to run without one
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    callbacks.append(ThrottledProgressBar())
    extra = trainer_options(experiment)
    # experiment.trainer may turn the model summary off again.
    passed_through: dict[str, Any] = {"enable_model_summary": True}
    passed_through.update(extra)
    try:
        return L.Trainer(
            accelerator=hw.accelerator,
            devices=hw.devices,
            num_nodes=hw.num_nodes,
            strategy=hw.strategy,
            precision=cast(Any, hw.precision),  # one of config.PRECISIONS, checked at startup
            max_epochs=training.max_epochs,
            gradient_clip_val=training.gradient_clip_val or None,
            accumulate_grad_batches=training.accumulate_grad_batches,
            deterministic=cfg.system.deterministic,
            sync_batchnorm=cfg.system.sync_batchnorm and world_size > 1,
            # mvfoul's DataModule shards every split itself (mvfoul.data.sharding): each rank gets a
            # disjoint share of the training draw, and evaluation has no padded duplicates.
            use_distributed_sampler=False,
            callbacks=callbacks,
            logger=logger,
            plugins=[AtomicCheckpointIO(), *slurm_plugins()],
            log_every_n_steps=experiment.log_every_n_steps,
            fast_dev_run=experiment.fast_dev_run,
            limit_train_batches=_batch_limit(experiment.limit_train_batches),
            limit_val_batches=_batch_limit(experiment.limit_val_batches),
            detect_anomaly=experiment.debug,
            default_root_dir=str(run_dir),
            **passed_through,
        )
    except (TypeError, ValueError, MisconfigurationException) as err:
        if not extra:
            raise
        raise ConfigError(
            f"experiment.trainer: Lightning's Trainer refused {extra}: {' '.join(str(err).split())}"
        ) from err


@cross_key_rule("system")
def check_gpu_count(cfg: DictConfig, p: Problems) -> None:
    system = cfg.system
    if system.accelerator == "gpu" and system.gpus == 0:
        p.add("system.gpus", "0 with system.accelerator=gpu: set system.gpus>=1, or use system=cpu")


def _limit_ok(value: Any) -> bool:
    # Lightning's convention: an int is a number of batches, a float a fraction of the epoch.
    if isinstance(value, int) and not isinstance(value, bool):
        return value >= 0
    return isinstance(value, float) and 0.0 <= value <= 1.0


@cross_key_rule("experiment")
def check_batch_limits(cfg: DictConfig, p: Problems) -> None:
    experiment = cfg.experiment
    for key in ("limit_train_batches", "limit_val_batches"):
        if not _limit_ok(experiment[key]):
            p.add(
                f"experiment.{key}",
                f"{experiment[key]!r} is out of range: expected a fraction in [0.0, 1.0] or a batch count >= 0",
            )
