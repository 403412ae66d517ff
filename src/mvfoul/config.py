"""The configuration schema: one dataclass per config group, and the root.

The names here are mvfoul's public API: saved configs and command lines use them, so a key is
never renamed or removed without a migration. OmegaConf checks types against these dataclasses
when Hydra composes; value ranges, allowed names and cross-field rules live in
:mod:`mvfoul.validate`. Every key is also documented by a comment where it is set, in the YAML
files under ``conf/``; a test keeps the YAML defaults and the defaults here in agreement.

Enumerated keys (optimizer, backbone, ...) are typed ``str`` on purpose: the validator then
reports every bad value in one message, with the allowed names, instead of stopping at the
first one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from mvfoul.paths import CONF_DIR

# Allowed values of the enumerated keys; mvfoul.validate checks against these.
DATASET_NAMES = ("mvfouls", "synthetic")
DECODERS = ("auto", "pyav", "torchcodec")
ON_DECODE_ERROR = ("raise", "skip")
POOLINGS = ("max", "mean", "attention")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "step", "plateau", "none")
LOSS_FUNCTIONS = ("focal", "ce")
CLASS_WEIGHT_METHODS = ("effective_num", "inverse_freq", "balanced")
BALANCE_TASKS = ("offence_severity", "action", "joint")
FREEZING_STRATEGIES = ("progressive", "adaptive", "none")
ACCELERATORS = ("auto", "gpu", "cpu")
PRECISIONS = ("16-mixed", "bf16-mixed", "32-true", "32", "16", "bf16", "64-true", "64")
MONITOR_MODES = ("min", "max")
LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")


@dataclass
class SyntheticConfig:
    """How the built-in dataset is generated (``dataset=synthetic`` only)."""

    num_train: int = 100
    num_valid: int = 30
    num_test: int = 30
    resolution: int = 112
    clip_frames: int = 125
    min_views: int = 2
    max_views: int = 4
    seed: int = 0


@dataclass
class DatasetConfig:
    name: str = "mvfouls"
    data_dir: Optional[str] = MISSING
    train_csv: Optional[str] = None
    val_csv: Optional[str] = None
    test_csv: Optional[str] = None
    batch_size: int = 16
    eval_batch_size: Optional[int] = None
    num_workers: int = 4
    pin_memory: Optional[bool] = None
    persistent_workers: bool = True
    prefetch_factor: Optional[int] = 2
    decoder: str = "auto"
    on_decode_error: str = "raise"
    cache_dir: Optional[str] = None
    num_frames: Optional[int] = None
    frame_size: int = 224
    resize_size: Optional[int] = None
    start_frame: int = 63
    end_frame: int = 87
    fps: float = 17.0
    clip_fps: float = 25.0
    train_views: int = 2
    augment: bool = True
    hflip_prob: float = 0.5
    crop_scale_min: float = 0.8
    color_jitter: float = 0.2
    # Per-channel normalisation; null = the backbone's own (its torchvision weights' transforms).
    # A run records the values it used here, so evaluation feeds the checkpoint the same input.
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    """``dataset=synthetic``: the dataset keys plus how the built-in data is generated."""

    name: str = "synthetic"
    data_dir: Optional[str] = None
    batch_size: int = 4
    num_workers: int = 2
    frame_size: int = 112
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    backbone: str = "mvit_base_16x4"
    pretrained: bool = True
    weights_path: Optional[str] = None
    pooling: str = "max"
    shared_dim: int = 512
    dropout_rate: float = 0.3


@dataclass
class TrainingConfig:
    max_epochs: int = 50
    learning_rate: float = 1e-3
    head_lr: Optional[float] = 1e-3
    backbone_lr: Optional[float] = 1e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    step_size: int = 10
    gamma: float = 0.1
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    weight_decay: float = 1e-4
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    stop_on_divergence: bool = True


@dataclass
class LossConfig:
    function: str = "focal"
    focal_gamma: float = 2.0
    # null, a number in (0, 1], or "class_weights" (alpha per class = the class weights).
    focal_alpha: Any = None
    label_smoothing: float = 0.1
    auto_disable_label_smoothing: bool = True
    use_class_weights: bool = True
    class_weight_method: str = "effective_num"
    effective_num_beta: float = 0.99
    severity_weight: float = 1.0
    action_weight: float = 1.0


@dataclass
class SamplingConfig:
    use_class_balanced_sampler: bool = True
    balance_task: str = "offence_severity"
    oversample_factor: float = 2.0
    samples_per_epoch: Optional[int] = None
    progressive_class_balancing: bool = True
    progressive_start_epoch: int = 0
    progressive_end_epoch: int = 10


@dataclass
class FreezingConfig:
    gradual_finetuning: bool = True
    freezing_strategy: str = "progressive"
    unfreeze_blocks: int = 1
    unfreeze_schedule: List[int] = field(default_factory=lambda: [5, 10, 15])
    patience_epochs: int = 2
    min_improvement: float = 0.001
    enable_backbone_lr_boost: bool = True
    backbone_lr_ratio_after_half: float = 0.6


@dataclass
class SystemConfig:
    accelerator: str = "gpu"
    # Devices per node: GPUs, or processes with accelerator=cpu (gloo); > 1 runs DDP.
    gpus: int = 1
    num_nodes: int = 1
    precision: str = "16-mixed"
    strategy: str = "auto"
    sync_batchnorm: bool = False
    # torch's intra-op threads on CPU runs; null = the cores left after the DataLoader workers.
    num_threads: Optional[int] = None
    channels_last: bool = False
    compile: bool = False
    seed: int = 42
    deterministic: bool = False


@dataclass
class ExperimentConfig:
    name: str = "default"
    tags: List[str] = field(default_factory=list)
    save_top_k: int = 3
    monitor: str = "val/sev_acc"
    mode: str = "max"
    save_last: bool = True
    log_every_n_steps: int = 50
    test_after_fit: bool = True
    use_wandb: bool = False
    wandb_project: str = "mvfoul"
    # Which loggers record the run (LOGGERS); use_wandb=true adds wandb.
    loggers: List[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    # Lightning Trainer options the schema does not name, passed through (mvfoul.training.extensions).
    trainer: Dict[str, Any] = field(default_factory=dict)
    # Extra Lightning callbacks: name -> {_target_: class path, its arguments...}.
    callbacks: Dict[str, Any] = field(default_factory=dict)
    debug: bool = False
    fast_dev_run: bool = False
    # int = a number of batches, float = a fraction of the epoch (Lightning's convention).
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    # null: a new run; auto: continue <run folder>/checkpoints/last.ckpt (hydra.run.dir); or a path.
    resume: Optional[str] = None


@dataclass
class MvfoulConfig:
    """The root: one node per config group."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    freezing: FreezingConfig = field(default_factory=FreezingConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)


@dataclass
class EvaluateConfig(MvfoulConfig):
    """``evaluate_hydra.py``: the training keys (any can be overridden) plus what to evaluate."""

    ckpt_path: Optional[str] = MISSING
    split: str = "test"


EVALUATION_SPLITS = ("train", "valid", "test", "chall")

# group name -> its schema; the YAML files of a group list "<group>_schema" first in their
# defaults, so Hydra checks them against the dataclass.
GROUP_SCHEMAS: dict[str, type] = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "loss": LossConfig,
    "sampling": SamplingConfig,
    "freezing": FreezingConfig,
    "system": SystemConfig,
    "experiment": ExperimentConfig,
}
# dataset.name -> the schema of that dataset option (the built-in one has generation keys).
DATASET_SCHEMAS: dict[str, type] = {"mvfouls": DatasetConfig, "synthetic": SyntheticDatasetConfig}
ROOT_SCHEMA_NAME = "mvfoul_schema"


def schema_name(group: str) -> str:
    return f"{group}_schema"


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name=ROOT_SCHEMA_NAME, node=MvfoulConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=schema_name(group), node=schema)
    cs.store(group="dataset", name="synthetic_schema", node=SyntheticDatasetConfig)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    from mvfoul.help import render_help

    # hydra/help/mvfoul.yaml renders its template through this resolver, so --help is generated
    # from the config files themselves and cannot go stale.
    if not OmegaConf.has_resolver("mvfoul_help"):
        OmegaConf.register_new_resolver("mvfoul_help", lambda: render_help(CONF_DIR))
    # The last part of default run and sweep folder names: date and time, or the SLURM job id
    # (the tasks of a job and its requeues then share one folder). Cached, like Hydra's ${now:}.
    if not OmegaConf.has_resolver("mvfoul_stamp"):
        from mvfoul.slurm import run_stamp

        OmegaConf.register_new_resolver("mvfoul_stamp", run_stamp, use_cache=True)


register_configs()
_register_resolvers()
