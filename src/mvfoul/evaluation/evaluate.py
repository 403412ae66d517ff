"""Checkpoint + split -> predictions JSON, and where the split has labels: official metrics,
confusion matrices and per-class tables. Used by ``evaluate_hydra.py`` and after training."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from mvfoul import atomic
from mvfoul.config import EVALUATION_SPLITS
from mvfoul.data.datamodule import MultiViewDataModule, worker_death_message
from mvfoul.data.transforms import KINETICS_MEAN, KINETICS_STD
from mvfoul.errors import ConfigError, DataError, MvfoulError
from mvfoul.evaluation.official import evaluate_files, write_predictions
from mvfoul.evaluation.report import write_reports
from mvfoul.help import GROUPS
from mvfoul.labels import HEADS
from mvfoul.rules import validate_config, with_schema
from mvfoul.runtime import hydra_run_dir, quiet_library_noise
from mvfoul.training.checkpoints import read_checkpoint, require_keys
from mvfoul.training.module import MultiViewFoulModule
from mvfoul.training.trainer import apply_cpu_threads, resolve_hardware

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    split: str
    num_actions: int
    predictions_path: Path
    metrics: dict[str, float] | None = None  # None for an unlabelled split
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        head = f"{self.split}: {self.num_actions} actions predicted -> {self.predictions_path}"
        if self.metrics is None:
            return head + " (no labels: no metrics)"
        shown = {
            key: "n/a (class absent)" if math.isnan(value) else f"{value:.2f}"
            for key, value in self.metrics.items()
        }
        return (
            f"{head}; leaderboard {shown['leaderboard_value']} (offence+severity: acc {shown['accuracy_offence_severity']}, "
            f"balanced {shown['balanced_accuracy_offence_severity']}; action: acc {shown['accuracy_action']}, "
            f"balanced {shown['balanced_accuracy_action']})"
        )


# Keys a checkpoint's config must hold: they decide the network and the input it was trained on,
# so a default in their place would build another model or feed another input.
REQUIRED_CONFIG_KEYS = (
    "model.backbone",
    "model.pooling",
    "model.shared_dim",
    "dataset.start_frame",
    "dataset.end_frame",
    "dataset.fps",
    "dataset.frame_size",
)
# Overrides that change the input the network sees: allowed (a user may know better), warned about.
INPUT_KEYS = (
    "dataset.frame_size",
    "dataset.resize_size",
    "dataset.start_frame",
    "dataset.end_frame",
    "dataset.fps",
    "dataset.clip_fps",
    "dataset.num_frames",
    "dataset.mean",
    "dataset.std",
)


def checkpoint_config(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's training config, complete under today's schema, or one line naming the key
    and the checkpoint that keep it from being one."""
    config = OmegaConf.create(checkpoint["hyper_parameters"]["config"])
    for key in REQUIRED_CONFIG_KEYS:
        if OmegaConf.select(config, key, default=None) is None:
            raise MvfoulError(
                f"ckpt_path: {path}: its config has no {key} (written by an older mvfoul); it cannot say which "
                "model and input it was trained with, so it cannot be evaluated here"
            )
    if OmegaConf.select(config, "dataset.mean", default=None) is None:
        # Runs before per-backbone normalisation were all fed the R3D statistics.
        OmegaConf.update(config, "dataset.mean", list(KINETICS_MEAN), force_add=True)
        OmegaConf.update(config, "dataset.std", list(KINETICS_STD), force_add=True)
        log.info(
            "%s records no input normalisation (an older run): using the R3D statistics it was trained with",
            path,
        )
    try:
        merged = with_schema(config)
    except (ConfigKeyError, ConfigAttributeError) as err:
        raise MvfoulError(
            f"ckpt_path: {path}: its config has the key {err.full_key}, which this version of mvfoul does not know "
            "(written by another version)"
        ) from None
    except ValidationError as err:
        raise MvfoulError(
            f"ckpt_path: {path}: its config has a value this version rejects: {err.full_key}: {err.msg}"
        ) from None
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def load_checkpoint(path: str | Path) -> MultiViewFoulModule:
    """The trained module of ``path``: any problem is one line naming the file."""
    path = Path(path).expanduser()
    checkpoint = read_checkpoint(path)
    require_keys(checkpoint, path, ("hyper_parameters.config", "state_dict"))
    checkpoint["hyper_parameters"]["config"] = checkpoint_config(checkpoint, path)
    return MultiViewFoulModule.from_checkpoint_dict(checkpoint, path)


def evaluate_checkpoint(
    module: MultiViewFoulModule,
    cfg: DictConfig,
    frame_indices: tuple[int, ...],
    split: str,
    out_dir: Path,
) -> EvaluationResult:
    """Predict ``split`` with ``module`` (batched, views padded with a mask) and write every file
    into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    datamodule = MultiViewDataModule(cfg.dataset, frame_indices, seed=cfg.system.seed)
    datamodule.prepare_data()
    datamodule.predict_split = split
    # Predictions run in one process.
    hw = dataclasses.replace(resolve_hardware(cfg.system), devices=1, strategy="auto", num_nodes=1)
    apply_cpu_threads(cfg.system, hw, cfg.dataset.num_workers)
    trainer = L.Trainer(
        accelerator=hw.accelerator,
        devices=1,
        precision=cast(Any, hw.precision),  # one of config.PRECISIONS, checked at startup
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[RichProgressBar(leave=True)],
    )
    try:
        outputs = cast(list[dict[str, Any]], trainer.predict(module, datamodule=datamodule) or [])
    except RuntimeError as err:
        message = worker_death_message(err, cfg.dataset.num_workers)
        if message is None:
            raise
        raise DataError(message) from None
    ids = [i for out in outputs for i in out["action_id"]]
    dropped = [i for out in outputs for i in out["dropped_action_ids"]]
    classes: dict[str, list[int]] = {head: [] for head in HEADS}
    for out in outputs:
        if out["action_id"]:  # a batch whose actions were all dropped holds no probabilities
            for head in HEADS:
                classes[head] += out[head].argmax(dim=1).tolist()
    if dropped:
        log.warning(
            "%s: %d action(s) had no readable view and get no prediction (counted wrong): %s",
            split,
            len(dropped),
            ", ".join(dropped[:10]),
        )
    predictions = {
        action_id: (severity, action)
        for action_id, severity, action in zip(ids, classes["offence_severity"], classes["action"])
    }
    predictions_path = out_dir / f"predictions_{split}.json"
    write_predictions(predictions_path, predictions, split)
    result = EvaluationResult(split, len(ids), predictions_path, files=[predictions_path])
    if split != "chall":
        ground_truth = datamodule.annotations_path(split)
        result.metrics = evaluate_files(ground_truth, predictions_path)
        metrics_path = out_dir / f"metrics_{split}.json"
        # Strict JSON: a balanced accuracy that is NaN (a class absent from the split) is null.
        metrics_file = {
            "split": split,
            "ground_truth": str(ground_truth),
            "num_predicted": len(ids),
        }
        metrics_file.update(result.metrics)
        atomic.write_json(metrics_path, metrics_file)
        labels = {a.action_id: a.labels for a in datamodule.datasets[split].actions}
        true = {head: [getattr(labels[i], head) for i in ids] for head in HEADS}
        result.files.append(metrics_path)
        result.files += write_reports(true, classes, out_dir, split)
    return result


def config_for_evaluation(
    module: MultiViewFoulModule, cfg: DictConfig, overrides: list[str]
) -> DictConfig:
    """The checkpoint's training config with the command line's key overrides applied: group
    options (``model=...``) and ``model.*`` keys cannot change a trained model and are refused;
    keys that change its input are applied with a warning; others take the value Hydra composed."""
    config = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(module.cfg)))
    changed_input: list[str] = []
    keys: list[str] = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key in ("ckpt_path", "split") or key.startswith("hydra"):
            continue  # evaluate_hydra.py's own keys; the others apply to the checkpoint's config
        if key in GROUPS or key.startswith("model."):
            what = "a group option" if key in GROUPS else "a model key"
            raise ConfigError(
                f"{override.input_line}: {what} cannot change a trained model; "
                f"override other keys instead (e.g. dataset.data_dir=...), or train a new model"
            )
        value = OmegaConf.select(cfg, key)
        if key in INPUT_KEYS and OmegaConf.select(config, key) != value:
            changed_input.append(f"{key}={value} (trained with {OmegaConf.select(config, key)})")
        OmegaConf.update(config, key, value, merge=False)
        keys.append(key)
    if changed_input:
        log.warning(
            "evaluating on another input than the model was trained on: %s; its scores may not mean much",
            ", ".join(changed_input),
        )
    given_folder = "dataset.data_dir" in keys and "dataset.name" not in keys
    if config.dataset.name == "synthetic" and given_folder:
        # On the built-in data, data_dir names where generated datasets are kept; a folder given at
        # evaluation is where the user's real clips are: never generate built-in data into it.
        log.info(
            "dataset.data_dir given: reading the SoccerNet clips in %s (the model was trained on the built-in data)",
            config.dataset.data_dir,
        )
        config.dataset.pop("synthetic", None)
        config.dataset.name = "mvfouls"
    # The weights come from the checkpoint: nothing to download or load besides it.
    config.model.pretrained = False
    config.model.weights_path = None
    return with_schema(config)


def evaluate_command(cfg: DictConfig) -> EvaluationResult:
    """``python evaluate_hydra.py ckpt_path=... split=...``."""
    quiet_library_noise()
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError(
            "ckpt_path: missing: give the checkpoint to evaluate, e.g. "
            "python evaluate_hydra.py ckpt_path=outputs/<run>/checkpoints/best.ckpt"
        )
    if cfg.split not in EVALUATION_SPLITS:
        raise ConfigError(f"split: {cfg.split!r} is not one of {', '.join(EVALUATION_SPLITS)}")
    module = load_checkpoint(cfg.ckpt_path)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    config = config_for_evaluation(module, cfg, overrides)
    resolved = validate_config(config)
    L.seed_everything(config.system.seed, workers=True, verbose=False)
    result = evaluate_checkpoint(module, config, resolved.frame_indices, cfg.split, hydra_run_dir())
    print(result.summary())
    return result
