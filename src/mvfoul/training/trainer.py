"""Builds Lightning's Trainer from the ``system`` and ``experiment`` groups, with
``experiment.trainer`` (options the schema does not name) and ``experiment.callbacks``."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from mvfoul.errors import ConfigError
from mvfoul.slurm import on_slurm
from mvfoul.training.callbacks import (
    DivergenceGuard,
    EpochMetricsOnEveryRank,
    SamplingScheduleCallback,
    SlurmRequeue,
    ThrottledProgressBar,
)
from mvfoul.training.checkpoints import (
    CHECKPOINTS_DIR,
    AtomicCheckpointIO,
    LastCheckpoint,
    RankedCheckpoint,
    checkpoint_filename,
)
from mvfoul.training.freezing import build_freezing_callback
from mvfoul.training.loggers import RunTensorBoardLogger
from mvfoul.training.summary import RunCSVLogger
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
    """``system.gpus`` counts devices per node: GPUs, or with ``accelerator=cpu`` processes (more
    than one runs DDP over gloo). Without CUDA, a GPU config falls back to one fp32 CPU process."""
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


def apply_cpu_threads(system: DictConfig, hw: Hardware, num_workers: int) -> None:
    """On a CPU run, set torch's intra-op threads: ``system.num_threads``, or the cores left after
    the DataLoader workers of every process of this node, shared by the processes (at least 1).
    torch's default, one per core, competes with the workers decoding video on the same cores."""
    if hw.accelerator != "cpu":
        return
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


def build_loggers(experiment: DictConfig, run_dir: Path, config: dict[str, Any]) -> list[Logger]:
    """``experiment.loggers``, plus wandb when ``experiment.use_wandb`` is true."""
    names = list(experiment.loggers)
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
    experiment = cfg.experiment
    training = cfg.training
    hw = resolve_hardware(cfg.system)
    world_size = hw.devices * hw.num_nodes
    backend = "nccl" if hw.accelerator == "gpu" else "gloo"
    strategy = f", strategy {hw.strategy} ({backend})" if world_size > 1 else ""
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
    freezing = build_freezing_callback(cfg)
    if freezing is not None:
        callbacks.append(freezing)
    if cfg.sampling.use_class_balanced_sampler:
        callbacks.append(SamplingScheduleCallback())
    plugins: list[Any] = [AtomicCheckpointIO()]
    if on_slurm():
        callbacks.append(SlurmRequeue())
        # mvfoul's requeue (SlurmRequeue) replaces Lightning's own.
        plugins.append(SLURMEnvironment(auto_requeue=False))
    extra_callbacks, problems = _instantiate(experiment.callbacks)
    if problems:
        raise ConfigError("; ".join(f"{key}: {message}" for key, message in problems))
    callbacks.extend(extra_callbacks)
    callbacks.append(ranked)
    logger = loggers if loggers is not None else build_loggers(experiment, run_dir, config)
    if logger:  # the learning-rate monitor writes to the loggers, and refuses to run without one
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    callbacks.append(ThrottledProgressBar())
    extra = cast(dict[str, Any], OmegaConf.to_container(experiment.trainer, resolve=True))
    # experiment.trainer may turn the model summary off again.
    options = {"enable_model_summary": True, **extra}
    try:
        return L.Trainer(
            accelerator=hw.accelerator,
            devices=hw.devices,
            num_nodes=hw.num_nodes,
            strategy=hw.strategy,
            precision=cast(Any, hw.precision),  # one of system.precision's choices
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
            plugins=plugins,
            log_every_n_steps=experiment.log_every_n_steps,
            fast_dev_run=experiment.fast_dev_run,
            limit_train_batches=_batch_limit(experiment.limit_train_batches),
            limit_val_batches=_batch_limit(experiment.limit_val_batches),
            detect_anomaly=experiment.debug,
            default_root_dir=str(run_dir),
            **options,
        )
    except (TypeError, ValueError, MisconfigurationException) as err:
        if not extra:
            raise
        raise ConfigError(
            f"experiment.trainer: Lightning's Trainer refused {extra}: {' '.join(str(err).split())}"
        ) from err


def _instantiate(spec: DictConfig) -> tuple[list[Callback], list[tuple[str, str]]]:
    """``experiment.callbacks`` built, in its order, and (key, message) for each that cannot be."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    callbacks: list[Callback] = []
    problems: list[tuple[str, str]] = []
    example = "e.g. {_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/sev_acc, mode: max}"
    for name, entry in spec.items():
        key = f"experiment.callbacks.{name!s}"
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            problems.append(
                (key, f"expected a mapping with _target_ (the callback's class), {example}")
            )
            continue
        try:
            # Built here to check it, and again for the Trainer: a callback's own checks (an
            # EarlyStopping mode, say) then fail at startup, with the rest of the config.
            callback = instantiate(entry)
        except InstantiationException as err:
            # Hydra's message says what failed: the import, or the arguments the class refused.
            problems.append((key, " ".join(str(err).split(" full_key:")[0].split())))
            continue
        if isinstance(callback, Callback):
            callbacks.append(callback)
        else:
            problems.append((key, f"{entry['_target_']} is not a Lightning Callback"))
    return callbacks, problems


# Trainer options mvfoul sets itself -> the key that sets them.
OWNED_TRAINER_OPTIONS = {
    "accelerator": "system.accelerator",
    "devices": "system.gpus",
    "num_nodes": "system.num_nodes",
    "strategy": "system.strategy",
    "precision": "system.precision",
    "deterministic": "system.deterministic",
    "sync_batchnorm": "system.sync_batchnorm",
    "max_epochs": "training.max_epochs",
    "gradient_clip_val": "training.gradient_clip_val",
    "accumulate_grad_batches": "training.accumulate_grad_batches",
    "callbacks": "experiment.callbacks",
    "logger": "experiment.loggers",
    "log_every_n_steps": "experiment.log_every_n_steps",
    "fast_dev_run": "experiment.fast_dev_run",
    "limit_train_batches": "experiment.limit_train_batches",
    "limit_val_batches": "experiment.limit_val_batches",
    "detect_anomaly": "experiment.debug",
    "default_root_dir": "hydra.run.dir",
    "use_distributed_sampler": "nothing: mvfoul shards every split itself (mvfoul.data.sharding)",
    "plugins": "nothing: mvfoul's checkpoint writer and SLURM environment are plugins",
}


@cross_key_rule("experiment")
def check_extensions(cfg: DictConfig, p: Problems) -> None:
    """experiment.trainer and experiment.callbacks."""
    experiment = cfg.experiment
    known = [name for name in inspect.signature(L.Trainer.__init__).parameters if name != "self"]
    for name in map(str, experiment.trainer):
        key = f"experiment.trainer.{name}"
        if name in OWNED_TRAINER_OPTIONS:
            owner = OWNED_TRAINER_OPTIONS[name]
            how = owner if owner.startswith("nothing") else f"set it with {owner}"
            p.add(key, f"mvfoul sets this Trainer option itself; {how}")
        elif name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            p.add(key, f"not an option of Lightning's Trainer{hint}")
    for key, message in _instantiate(experiment.callbacks)[1]:
        p.add(key, message)


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
    for key in ("limit_train_batches", "limit_val_batches"):
        value = cfg.experiment[key]
        expected = "a fraction in [0.0, 1.0] or a batch count >= 0"
        p.check(_limit_ok(value), f"experiment.{key}", value, expected)
