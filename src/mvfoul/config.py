"""The configuration schema: one dataclass per config group, and the root.

The names here are mvfoul's public API (saved configs and command lines use them): a key is never
renamed or removed without a migration. Each field is the single source of what is known about
its key (type, default, one-line doc, allowed values, range); :mod:`mvfoul.validate` checks the
values and :mod:`mvfoul.help` documents them. Enumerated keys are typed ``str`` on purpose: a bad
value is then reported with every other problem, and the allowed names, instead of alone.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from mvfoul.slurm import run_stamp

# Allowed values that code outside the schema checks too.
POOLINGS = ("max", "mean", "attention")
FREEZING_STRATEGIES = ("progressive", "adaptive", "none")
MONITOR_MODES = ("min", "max")
EVALUATION_SPLITS = ("train", "valid", "test", "chall")


def key(
    default: Any = MISSING,
    doc: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    bounds: str | None = None,
) -> Any:
    """A schema field: its one-line ``doc``, the values it may take (``choices``; for a list, each
    element) and its range (``bounds``: ``">= 1"``, ``"> 0"``, ``"in [0, 1)"``...)."""
    metadata = {"doc": doc, "choices": choices, "bounds": bounds}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_BOUNDS = re.compile(r"^(?:(>=|>) (-?[\d.]+)|in ([\[(])(-?[\d.]+), (-?[\d.]+)([\])]))$")


def within(value: Any, bounds: str) -> bool:
    """Whether the number ``value`` lies in ``bounds`` (``">= 1"``, ``"> 0"``, ``"in [0, 1)"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    m = _BOUNDS.match(bounds)
    if m is None:
        raise ValueError(f"bounds {bounds!r}: expected '>= x', '> x' or 'in [a, b)' with [ ( ] )")
    op, low, left, a, b, right = m.groups()
    if op:
        return value >= float(low) if op == ">=" else value > float(low)
    above = value >= float(a) if left == "[" else value > float(a)
    below = value <= float(b) if right == "]" else value < float(b)
    return above and below


def new_default(base: type, name: str, default: Any, doc: str | None = None) -> Any:
    """``base``'s field ``name`` with a new default (and doc): choices and range are inherited."""
    inherited = next(f for f in fields(base) if f.name == name)
    metadata = dict(inherited.metadata)
    if doc is not None:
        metadata["doc"] = doc
    return field(default=default, metadata=metadata)


@dataclass
class SyntheticConfig:
    """How the built-in dataset is generated (``dataset=synthetic`` only)."""

    num_train: int = key(100, "actions in Train/", bounds=">= 1")
    num_valid: int = key(30, "actions in Valid/", bounds=">= 1")
    num_test: int = key(30, "actions in Test/", bounds=">= 1")
    resolution: int = key(112, "clip width and height (px)", bounds=">= 16")
    clip_frames: int = key(125, "frames per clip (25 fps, 5 s like the real clips)")
    min_views: int = key(2, "fewest camera views per action")
    max_views: int = key(4, "most camera views per action")
    seed: int = key(0, "same seed, same videos and labels")


@dataclass
class DatasetConfig:
    name: str = key(
        "mvfouls",
        "which reader: mvfouls (SoccerNet layout) | synthetic (built-in)",
        choices=("mvfouls", "synthetic"),
    )
    data_dir: Optional[str] = key(
        MISSING,
        "required: folder holding Train/ Valid/ Test/ (any case), each with annotations.json and action_N/clip_K.mp4",
    )
    train_csv: Optional[str] = key(
        None,
        "CSV annotations of the training split (schema in docs/csv-annotations.md), relative to data_dir; null = Train/annotations.json",
    )
    val_csv: Optional[str] = key(
        None, "CSV annotations of the validation split; null = Valid/annotations.json"
    )
    test_csv: Optional[str] = key(
        None, "CSV annotations of the test split; null = Test/annotations.json"
    )
    batch_size: int = key(
        16, "actions per training batch (each action brings train_views clips)", bounds=">= 1"
    )
    eval_batch_size: Optional[int] = key(
        None, "actions per validation/test batch (all views); null = batch_size", bounds=">= 1"
    )
    num_workers: int = key(
        4,
        "DataLoader worker processes decoding video; 0 = decode in the main process",
        bounds=">= 0",
    )
    pin_memory: Optional[bool] = key(
        None, "page-locked batches for faster GPU copies; null = on when training on a GPU"
    )
    persistent_workers: bool = key(
        True, "keep DataLoader workers alive between epochs (they are costly to start)"
    )
    prefetch_factor: Optional[int] = key(
        2, "batches each worker prepares ahead (ignored with num_workers=0)", bounds=">= 1"
    )
    decoder: str = key(
        "auto",
        "video decoding: auto (= pyav, the fastest here) | pyav | torchcodec (needs system FFmpeg and the torchcodec extra)",
        choices=("auto", "pyav", "torchcodec"),
    )
    on_decode_error: str = key(
        "raise",
        "an unreadable clip: raise (stop, naming the file) | skip (use another view of the action, else drop the action; counted and reported each epoch)",
        choices=("raise", "skip"),
    )
    cache_dir: Optional[str] = key(
        None,
        "frame cache: each clip's window decoded once at training resolution into this folder; null = no cache",
    )
    num_frames: Optional[int] = key(
        None,
        "null = derived from the window; if set, must equal what the window gives (checked at startup)",
    )
    frame_size: int = key(
        224,
        "square crop fed to the backbone (px); must suit the backbone (MViT: 224)",
        bounds=">= 16",
    )
    resize_size: Optional[int] = key(
        None, "short side before the crop (px); null = frame_size * 8/7 (256 for 224)"
    )
    start_frame: int = key(
        63, "first frame of the window (the foul is near frame 75)", bounds=">= 0"
    )
    end_frame: int = key(87, "one past the last frame of the window")
    fps: float = key(17.0, "sampling rate inside the window; 63, 87, 17 -> 16 frames")
    clip_fps: float = key(
        25.0, "frame rate of the source clips (SoccerNet-MVFoul: 25)", bounds="> 0"
    )
    train_views: int = key(
        2, "views drawn at random per action in training; validation uses all views", bounds=">= 1"
    )
    augment: bool = key(True, "train-time augmentation, same draw for every frame of a clip")
    hflip_prob: float = key(0.5, "probability of a horizontal flip", bounds="in [0, 1]")
    crop_scale_min: float = key(
        0.8, "random resized crop keeps at least this fraction of the area", bounds="in (0, 1]"
    )
    color_jitter: float = key(
        0.2, "brightness/contrast/saturation jitter strength; 0 = off", bounds="in [0, 1)"
    )
    mean: Optional[List[float]] = key(
        None,
        "per-channel normalisation mean; null = the backbone's own (its torchvision weights' transforms); a run records what it used",
    )
    std: Optional[List[float]] = key(
        None, "per-channel normalisation std; null = the backbone's own"
    )


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    """``dataset=synthetic``: the dataset keys plus how the built-in data is generated."""

    name: str = new_default(DatasetConfig, "name", "synthetic")
    data_dir: Optional[str] = new_default(
        DatasetConfig,
        "data_dir",
        None,
        doc="parent folder of generated datasets (one sub-folder per generation spec); null = $MVFOUL_CACHE_DIR or ~/.cache/mvfoul, then synthetic/",
    )
    batch_size: int = new_default(DatasetConfig, "batch_size", 4)
    num_workers: int = new_default(DatasetConfig, "num_workers", 2)
    frame_size: int = new_default(
        DatasetConfig, "frame_size", 112, doc="square crop fed to the backbone (px)"
    )
    synthetic: SyntheticConfig = key(
        doc="how the built-in data is generated", factory=SyntheticConfig
    )


@dataclass
class ModelConfig:
    backbone: str = key(
        "mvit_base_16x4",
        "network applied to each view: mvit_base_16x4 | mvit_v2_s | r3d_18 | r2plus1d_18 | mc3_18 | s3d | swin3d_t | tiny",
    )
    pretrained: bool = key(
        True, "load Kinetics-400 weights (torchvision cache: ~/.cache/torch/hub/checkpoints/)"
    )
    weights_path: Optional[str] = key(
        None, "local weights file (state dict) to load instead; loaded with weights_only=True"
    )
    pooling: str = key(
        "max",
        "how view features are combined: max | mean | attention (padded views are ignored)",
        choices=POOLINGS,
    )
    shared_dim: int = key(
        512, "width of the shared layer between pooling and the two heads", bounds=">= 1"
    )
    dropout_rate: float = key(0.3, "dropout before the heads", bounds="in [0, 1)")


@dataclass
class TrainingConfig:
    max_epochs: int = key(50, "training epochs", bounds=">= 1")
    learning_rate: float = key(
        1e-3, "base learning rate; used by any group whose own rate below is null", bounds="> 0"
    )
    head_lr: Optional[float] = key(
        1e-3,
        "learning rate of view pooling, shared layer and heads; null = learning_rate",
        bounds="> 0",
    )
    backbone_lr: Optional[float] = key(
        1e-4, "learning rate of the backbone; null = learning_rate", bounds="> 0"
    )
    optimizer: str = key("adamw", "adamw | adam | sgd", choices=("adamw", "adam", "sgd"))
    momentum: float = key(0.9, "sgd momentum (ignored by adam/adamw)", bounds="in [0, 1)")
    scheduler: str = key(
        "cosine",
        "cosine (linear warmup, then cosine to min_lr) | step | plateau | none",
        choices=("cosine", "step", "plateau", "none"),
    )
    warmup_epochs: float = key(
        1.0, "cosine: epochs of linear warmup from 0 (fractions allowed)", bounds=">= 0"
    )
    min_lr: float = key(1e-6, "cosine: floor the learning rate decays to", bounds=">= 0")
    step_size: int = key(10, "step: epochs between decays", bounds=">= 1")
    gamma: float = key(0.1, "step: decay factor", bounds="in (0, 1]")
    plateau_patience: int = key(
        3, "plateau: epochs without improvement of experiment.monitor before a decay", bounds=">= 0"
    )
    plateau_factor: float = key(0.5, "plateau: decay factor", bounds="in (0, 1)")
    weight_decay: float = key(
        1e-4, "decoupled (adamw) or L2 (adam, sgd) weight decay", bounds=">= 0"
    )
    gradient_clip_val: Optional[float] = key(
        1.0, "clip the gradient norm to this value; null or 0 = no clipping", bounds=">= 0"
    )
    accumulate_grad_batches: int = key(
        1, "batches whose gradients are summed before one optimiser step", bounds=">= 1"
    )
    stop_on_divergence: bool = key(
        True,
        "stop at the first non-finite training loss (and never keep non-finite weights); false = train on regardless",
    )


@dataclass
class LossConfig:
    function: str = key(
        "focal",
        "focal | ce (cross-entropy); focal with focal_gamma 0 equals ce",
        choices=("focal", "ce"),
    )
    focal_gamma: float = key(2.0, "focusing parameter; 0 = cross-entropy", bounds=">= 0")
    focal_alpha: Any = key(
        None,
        "null (= 1), a constant factor in (0, 1], or class_weights (alpha per class = the class weights)",
    )
    label_smoothing: float = key(
        0.1,
        "target smoothing in [0, 1); switched off by the rule below on the defaults",
        bounds="in [0, 1)",
    )
    auto_disable_label_smoothing: bool = key(
        True, "switch smoothing off when class-balanced oversampling and class weights are both on"
    )
    use_class_weights: bool = key(
        True, "weight each class by its training frequency (see class_weight_method)"
    )
    class_weight_method: str = key(
        "effective_num",
        "effective_num (Cui et al. 2019) | inverse_freq | balanced",
        choices=("effective_num", "inverse_freq", "balanced"),
    )
    effective_num_beta: float = key(
        0.99,
        "effective_num: beta in [0, 1); closer to 1 = stronger re-weighting",
        bounds="in [0, 1)",
    )
    severity_weight: float = key(
        1.0, "weight of the offence+severity loss in the total", bounds=">= 0"
    )
    action_weight: float = key(1.0, "weight of the action-class loss in the total", bounds=">= 0")


@dataclass
class SamplingConfig:
    use_class_balanced_sampler: bool = key(
        True, "draw training actions with per-class weights instead of uniformly"
    )
    balance_task: str = key(
        "offence_severity",
        "which labels are balanced: offence_severity | action | joint",
        choices=("offence_severity", "action", "joint"),
    )
    oversample_factor: float = key(
        2.0,
        "cap: no class is drawn more than this many times its natural frequency (>= 1; 1 = natural)",
        bounds=">= 1",
    )
    samples_per_epoch: Optional[int] = key(
        None,
        "actions drawn per epoch, all GPUs together; null = the training set size",
        bounds=">= 1",
    )
    progressive_class_balancing: bool = key(
        True, "move the weights from natural to balanced between the two epochs below"
    )
    progressive_start_epoch: int = key(
        0, "epoch where the ramp starts (natural frequencies before)", bounds=">= 0"
    )
    progressive_end_epoch: int = key(10, "epoch where the ramp ends (balanced target after)")


@dataclass
class FreezingConfig:
    gradual_finetuning: bool = key(True, "start with the backbone frozen (pooling and heads train)")
    freezing_strategy: str = key(
        "progressive",
        "progressive (unfreeze_schedule) | adaptive (on a plateau of experiment.monitor) | none (all trainable)",
        choices=FREEZING_STRATEGIES,
    )
    unfreeze_blocks: int = key(
        1, "backbone blocks unfrozen at each step, from the top", bounds=">= 1"
    )
    unfreeze_schedule: List[int] = key(
        doc="progressive: epochs at which unfreeze_blocks more blocks unfreeze",
        factory=lambda: [5, 10, 15],
    )
    patience_epochs: int = key(
        2, "adaptive: epochs without improvement before the next unfreeze", bounds=">= 1"
    )
    min_improvement: float = key(
        0.001,
        "adaptive: smallest change of experiment.monitor that counts as improvement",
        bounds=">= 0",
    )
    enable_backbone_lr_boost: bool = key(
        True,
        "once half the backbone trains, raise its LR to head_lr * backbone_lr_ratio_after_half",
    )
    backbone_lr_ratio_after_half: float = key(
        0.6, "backbone LR after the boost, as a fraction of head_lr", bounds="> 0"
    )


@dataclass
class SystemConfig:
    accelerator: str = key(
        "gpu", "gpu | cpu | auto (gpu when CUDA is available)", choices=("auto", "gpu", "cpu")
    )
    gpus: int = key(
        1, "devices per node: GPUs (more than 1 = DDP, see system=multi_gpu)", bounds=">= 0"
    )
    num_nodes: int = key(1, "machines", bounds=">= 1")
    precision: str = key(
        "16-mixed",
        "16-mixed | bf16-mixed | 32-true (CPU runs always use 32-true)",
        choices=("16-mixed", "bf16-mixed", "32-true", "32", "16", "bf16", "64-true", "64"),
    )
    strategy: str = key("auto", "Lightning strategy: auto | ddp | ddp_spawn | fsdp | ...")
    sync_batchnorm: bool = key(
        False,
        "synchronise BatchNorm statistics across processes (DDP only; the ResNet-3D family, S3D, tiny)",
    )
    num_threads: Optional[int] = key(
        None,
        "torch intra-op threads on CPU; null = the cores left after the DataLoader workers (at least 1)",
        bounds=">= 1",
    )
    channels_last: bool = key(
        False,
        "backbone weights and clips in channels_last_3d memory order (GPU: see benchmarks/gpu.py)",
    )
    compile: bool = key(
        False, "torch.compile the backbone (slow first steps; GPU: see benchmarks/gpu.py)"
    )
    seed: int = key(42, "seeds python, numpy, torch and every DataLoader worker")
    deterministic: bool = key(False, "deterministic algorithms only (slower; exact reruns)")


@dataclass
class ExperimentConfig:
    name: str = key("default", "run name: outputs/<name>/<date_time>/ and the loggers' run name")
    tags: List[str] = key(doc="free-form labels sent to the loggers", factory=list)
    save_top_k: int = key(
        3, "best checkpoints kept (by monitor); -1 = all, 0 = none", bounds=">= -1"
    )
    monitor: str = key(
        "val/sev_acc",
        "metric that ranks checkpoints: {train,val}/{loss,sev_acc,sev_bacc,action_acc,action_bacc,leaderboard}",
    )
    mode: str = key(
        "max", "max for accuracies and leaderboard, min for losses", choices=MONITOR_MODES
    )
    save_last: bool = key(True, "also keep checkpoints/last.ckpt (for resuming)")
    log_every_n_steps: int = key(50, "training steps between metric logs", bounds=">= 1")
    test_after_fit: bool = key(
        True,
        "after training, evaluate the best checkpoint on the test split (when there is one) into the run folder",
    )
    use_wandb: bool = key(
        False,
        "also log to Weights & Biases (offline without credentials; pip install -e '.[wandb]')",
    )
    wandb_project: str = key("mvfoul", "W&B project name")
    # experiment.use_wandb=true adds wandb to these.
    loggers: List[str] = key(
        doc="what records the run: csv, tensorboard, wandb, mlflow (pip install mlflow)",
        factory=lambda: ["csv", "tensorboard"],
        choices=("csv", "tensorboard", "wandb", "mlflow"),
    )
    trainer: Dict[str, Any] = key(
        doc="other Lightning Trainer options, e.g. +experiment.trainer.val_check_interval=0.5",
        factory=dict,
    )
    callbacks: Dict[str, Any] = key(
        doc="extra Lightning callbacks: name: {_target_: lightning.pytorch.callbacks.EarlyStopping, ...}",
        factory=dict,
    )
    debug: bool = key(
        False, "autograd anomaly detection: names the op behind a NaN gradient (slow)"
    )
    fast_dev_run: bool = key(
        False, "run one training and one validation batch, then stop (no checkpoints)"
    )
    limit_train_batches: Any = key(
        1.0, "a fraction (float) of the training batches per epoch, or a count (int)"
    )
    limit_val_batches: Any = key(
        1.0, "a fraction (float) of the validation batches, or a count (int)"
    )
    resume: Optional[str] = key(
        None,
        "continue a run: null = start a new one; auto = <run folder>/checkpoints/last.ckpt (give hydra.run.dir, or use python -m mvfoul.runs resume RUN_DIR); or a checkpoint path",
    )


@dataclass
class MvfoulConfig:
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

    ckpt_path: Optional[str] = key(
        MISSING,
        "the checkpoint to evaluate (.ckpt from a run's checkpoints/); it carries its training config",
    )
    split: str = key(
        "test", "train | valid | test | chall (the unlabelled challenge split: predictions only)"
    )


# group name -> its schema; each YAML option of a group lists "<group>_schema" first in its
# defaults, so Hydra checks it against the dataclass.
GROUP_SCHEMAS: dict[str, type] = typing.get_type_hints(MvfoulConfig)
# dataset.name -> the schema of that dataset option (the built-in one has generation keys).
DATASET_SCHEMAS: dict[str, type] = {"mvfouls": DatasetConfig, "synthetic": SyntheticDatasetConfig}

_store = ConfigStore.instance()
_store.store(name="mvfoul_schema", node=MvfoulConfig)
_store.store(name="evaluate_schema", node=EvaluateConfig)
for _group, _schema in GROUP_SCHEMAS.items():
    _store.store(group=_group, name=f"{_group}_schema", node=_schema)
_store.store(group="dataset", name="synthetic_schema", node=SyntheticDatasetConfig)

# The last part of default run and sweep folder names: date and time, or the SLURM job id
# (the tasks of a job and its requeues then share one folder). Cached, like Hydra's ${now:}.
OmegaConf.register_new_resolver("mvfoul_stamp", run_stamp, use_cache=True, replace=True)
