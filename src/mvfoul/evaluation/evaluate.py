"""Checkpoint + split -> predictions JSON, and where the split has labels: official metrics,
confusion matrices and per-class tables. Used by ``evaluate_hydra.py`` and after training."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf

from mvfoul.data.datamodule import MultiViewDataModule
from mvfoul.config import EVALUATION_SPLITS
from mvfoul.errors import ConfigError, MvfoulError
from mvfoul.evaluation.official import evaluate_files, write_predictions
from mvfoul.evaluation.report import write_reports
from mvfoul.losses import HEADS
from mvfoul.training.module import MultiViewFoulModule
from mvfoul.training.trainer import resolve_hardware
from mvfoul.validate import validate_config, with_schema

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    split: str
    num_actions: int
    predictions_path: Path
    metrics: dict[str, float] | None = None  # None for an unlabelled split
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        head = f"{self.split}: {self.num_actions} actions predicted -> {self.predictions_path}"
        if self.metrics is None:
            return head + " (no labels: no metrics)"
        m = self.metrics
        return (
            f"{head}; leaderboard {_pct(m['leaderboard_value'])} (offence+severity: acc {_pct(m['accuracy_offence_severity'])}, "
            f"balanced {_pct(m['balanced_accuracy_offence_severity'])}; action: acc {_pct(m['accuracy_action'])}, "
            f"balanced {_pct(m['balanced_accuracy_action'])})"
        )


def _pct(value: float) -> str:
    return "n/a (class absent)" if math.isnan(value) else f"{value:.2f}"


def load_checkpoint(path: str | Path) -> MultiViewFoulModule:
    path = Path(path).expanduser()
    if not path.is_file():
        raise MvfoulError(f"ckpt_path: {path} is not a file; give a .ckpt from a run's checkpoints/ folder")
    try:
        return MultiViewFoulModule.from_checkpoint(path)
    except (KeyError, RuntimeError, OSError, ValueError) as err:
        raise MvfoulError(f"ckpt_path: {path} is not an mvfoul checkpoint ({type(err).__name__}: {err})") from None


def predict(module: MultiViewFoulModule, cfg: DictConfig, frame_indices: tuple[int, ...], split: str, progress: bool = True) -> tuple[MultiViewDataModule, list[dict[str, Any]]]:
    """Batched predictions for every action of ``split`` (views padded with a mask)."""
    datamodule = MultiViewDataModule(cfg.dataset, frame_indices, seed=cfg.system.seed)
    datamodule.prepare_data()
    datamodule.predict_split = split
    hw = resolve_hardware(cfg.system)
    trainer = L.Trainer(
        accelerator=hw.accelerator,
        devices=1,
        precision=hw.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=[RichProgressBar(leave=True)] if progress else [],
    )
    outputs = trainer.predict(module, datamodule=datamodule)
    return datamodule, outputs or []


def evaluate_checkpoint(
    module: MultiViewFoulModule, cfg: DictConfig, frame_indices: tuple[int, ...], split: str, out_dir: Path, progress: bool = True
) -> EvaluationResult:
    """Predict ``split`` with ``module`` and write every file into ``out_dir``."""
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    datamodule, outputs = predict(module, cfg, frame_indices, split, progress)
    ids: list[str] = []
    probs: dict[str, list[torch.Tensor]] = {head: [] for head in HEADS}
    dropped: list[str] = []
    for out in outputs:
        ids += out["action_id"]
        dropped += out["dropped_action_ids"]
        for head in HEADS:
            if out["action_id"]:
                probs[head].append(out[head])
    classes = {head: torch.cat(probs[head]).argmax(dim=1).tolist() if probs[head] else [] for head in HEADS}
    if dropped:
        log.warning("%s: %d action(s) had no readable view and get no prediction (counted wrong): %s", split, len(dropped), ", ".join(dropped[:10]))

    predictions_path = out_dir / f"predictions_{split}.json"
    write_predictions(predictions_path, {i: (s, a) for i, s, a in zip(ids, classes["offence_severity"], classes["action"])}, set_name=split)
    result = EvaluationResult(split, len(ids), predictions_path, files=[predictions_path])

    if split != "chall":
        ground_truth = datamodule.annotations_path(split)
        result.metrics = evaluate_files(ground_truth, predictions_path)
        metrics_path = out_dir / f"metrics_{split}.json"
        metrics_path.write_text(
            json.dumps({"split": split, "ground_truth": str(ground_truth), "num_predicted": len(ids), **result.metrics}, indent=2)
            + "\n",
            encoding="utf-8",
        )
        labels = {a.action_id: a.labels for a in datamodule.datasets[split].actions}
        true = {head: [getattr(labels[i], head) for i in ids] for head in HEADS}
        result.files += [metrics_path, *write_reports(true, classes, out_dir, split)]
    result.seconds = time.monotonic() - started
    return result


# Keys of evaluate_hydra.py itself; every other override applies to the checkpoint's config.
_OWN_KEYS = ("ckpt_path", "split")


def config_for_evaluation(module: MultiViewFoulModule, cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The checkpoint's training config with the command line's key overrides applied.

    Group options (``model=...``) cannot change a trained model and are refused; keys
    (``dataset.data_dir=...``) take the value Hydra composed and type-checked for them.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mvfoul.help import GROUPS

    config = OmegaConf.create(OmegaConf.to_container(module.cfg))
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key in _OWN_KEYS or key.startswith("hydra"):
            continue
        if key in GROUPS:
            raise ConfigError(
                f"{override.input_line}: a group option cannot change a trained model; "
                f"override keys instead (e.g. dataset.data_dir=...)"
            )
        OmegaConf.update(config, key, OmegaConf.select(cfg, key), merge=False)
    # The weights come from the checkpoint: nothing to download or load besides it.
    config.model.pretrained = False
    config.model.weights_path = None
    return with_schema(config)


def evaluate_command(cfg: DictConfig) -> EvaluationResult:
    """``python evaluate_hydra.py ckpt_path=... split=...``."""
    from hydra.core.hydra_config import HydraConfig

    from mvfoul.runtime import hydra_run_dir, quiet_library_noise

    quiet_library_noise()
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
