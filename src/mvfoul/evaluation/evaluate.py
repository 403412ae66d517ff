"""Checkpoint + split -> predictions JSON, and where the split has labels: official metrics,
confusion matrices (PNG, CSV), per-class tables. For ``evaluate_hydra.py`` and after training."""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
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
from mvfoul.help import GROUPS
from mvfoul.labels import HEAD_CLASSES, HEADS
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
    """The checkpoint's training config under today's schema, or one line naming what is wrong."""
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


def _write_csv(path: Path, rows: Sequence[Sequence[object]]) -> None:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    atomic.write_text(path, out.getvalue())


def write_confusion_png(matrix: np.ndarray, names: Sequence[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed (servers, CI)
    import matplotlib.pyplot as plt

    support = matrix.sum(axis=1, keepdims=True)
    # Colour by row share (recall per cell) so rare classes read as well as common ones.
    shares = np.divide(matrix, support, out=np.zeros(matrix.shape, dtype=float), where=support > 0)
    size = 2.0 + 0.7 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if shares[i, j] > 0.5 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour)
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_reports(
    true: Mapping[str, Sequence[int]], pred: Mapping[str, Sequence[int]], out_dir: Path, split: str
) -> list[Path]:
    """Confusion matrices (PNG + CSV) for both tasks and the per-class table; returns the files."""
    written: list[Path] = []
    table: list[list[object]] = [["task", "class", "precision", "recall", "support", "predicted"]]
    markdown: list[str] = []
    for head, names in HEAD_CLASSES.items():
        count = len(names)
        true_classes = np.asarray(true[head], dtype=np.int64)
        cells = true_classes * count + np.asarray(pred[head], dtype=np.int64)
        matrix = np.bincount(cells, minlength=count**2).reshape(count, count)  # [true, predicted]
        csv_path = out_dir / f"confusion_{head}_{split}.csv"
        png_path = out_dir / f"confusion_{head}_{split}.png"
        rows = [[name, *counts] for name, counts in zip(names, matrix.tolist())]
        _write_csv(csv_path, [["true \\ predicted", *names], *rows])
        write_confusion_png(matrix, names, f"{head.replace('_', ' + ')} ({split})", png_path)
        written += [csv_path, png_path]
        markdown += [f"### {head}", "", "| class | precision % | recall % | support | predicted |"]
        markdown.append("|---|---|---|---|---|")
        for index, name in enumerate(names):
            right = int(matrix[index, index])
            predicted = int(matrix[:, index].sum())
            support = int(matrix[index].sum())
            precision = f"{100.0 * right / predicted:.1f}" if predicted else "n/a"
            recall = f"{100.0 * right / support:.1f}" if support else "n/a"
            row = [name, precision, recall, support, predicted]
            table.append([head, *row])
            markdown.append("| " + " | ".join(map(str, row)) + " |")
        markdown.append("")
    table_csv = out_dir / f"per_class_{split}.csv"
    table_md = out_dir / f"per_class_{split}.md"
    _write_csv(table_csv, table)
    atomic.write_text(table_md, "\n".join(markdown))
    return written + [table_csv, table_md]


def evaluate_checkpoint(
    module: MultiViewFoulModule,
    cfg: DictConfig,
    frame_indices: tuple[int, ...],
    split: str,
    out_dir: Path,
) -> EvaluationResult:
    """Predict ``split`` with ``module`` and write every file into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    datamodule = MultiViewDataModule(cfg.dataset, frame_indices, seed=cfg.system.seed)
    datamodule.prepare_data()
    datamodule.predict_split = split
    hw = dataclasses.replace(resolve_hardware(cfg.system), devices=1, strategy="auto", num_nodes=1)
    apply_cpu_threads(cfg.system, hw, cfg.dataset.num_workers)
    trainer = L.Trainer(
        accelerator=hw.accelerator,
        devices=1,
        precision=cast(Any, hw.precision),  # one of system.precision's choices, checked at startup
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
    kept = [out for out in outputs if out["action_id"]]  # else: no actions, no probabilities
    classes = {
        head: [c for out in kept for c in out[head].argmax(dim=1).tolist()] for head in HEADS
    }
    if dropped:
        log.warning(
            "%s: %d action(s) had no readable view and get no prediction (counted wrong): %s",
            split,
            len(dropped),
            ", ".join(dropped[:10]),
        )
    predictions = dict(zip(ids, zip(classes["offence_severity"], classes["action"])))
    predictions_path = write_predictions(out_dir / f"predictions_{split}.json", predictions, split)
    result = EvaluationResult(split, len(ids), predictions_path, files=[predictions_path])
    if split != "chall":
        ground_truth = datamodule.annotations_path(split)
        result.metrics = evaluate_files(ground_truth, predictions_path)
        metrics_path = out_dir / f"metrics_{split}.json"
        # Strict JSON: a balanced accuracy that is NaN (a class absent from the split) is null.
        summary = {"split": split, "ground_truth": str(ground_truth), "num_predicted": len(ids)}
        atomic.write_json(metrics_path, {**summary, **result.metrics})
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
        # On the built-in data, data_dir is where generated datasets are kept; one given at
        # evaluation holds the user's real clips: read them, never generate data into it.
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
