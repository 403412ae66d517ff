"""The LightningModule: multi-view network, two-task loss, metrics, optimiser and schedule."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mvfoul.errors import MvfoulError
from mvfoul.labels import HEAD_CLASSES
from mvfoul.losses import (
    HEADS,
    MultiTaskLoss,
    class_counts,
    class_weights,
    format_class_weight_table,
    scalar_focal_alpha,
    uses_class_weights,
)
from mvfoul.models.net import MultiViewNet
from mvfoul.training.data_report import DataFaultTally
from mvfoul.training.metrics import MultiTaskScores
from mvfoul.training.optim import configure_optimization

log = logging.getLogger(__name__)

# The few numbers worth watching while an epoch runs; everything goes to the loggers.
PROGRESS_BAR_METRICS = ("val/loss", "val/sev_acc", "val/leaderboard")


class MultiViewFoulModule(L.LightningModule):
    """Trains :class:`MultiViewNet` on both tasks.

    The whole composed config is saved in the checkpoint's hyperparameters, so a checkpoint
    alone is enough to rebuild the model: :meth:`from_checkpoint` (not Lightning's
    ``load_from_checkpoint``, which would build the backbone with ``pretrained=true`` and fetch
    weights the checkpoint already holds).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        cfg = OmegaConf.create(config)
        self.cfg: DictConfig = cfg
        model_cfg = cfg.model
        loss_cfg = cfg.loss
        self.net = MultiViewNet(
            backbone=model_cfg.backbone,
            pretrained=model_cfg.pretrained,
            weights_path=model_cfg.weights_path,
            pooling=model_cfg.pooling,
            shared_dim=model_cfg.shared_dim,
            dropout_rate=model_cfg.dropout_rate,
            channels_last=bool(cfg.system.get("channels_last", False)),
        )
        if cfg.system.get("compile", False):
            # In place (nn.Module.compile), so the state dict keeps its keys and checkpoints load
            # with or without it. Compiled at the first forward pass.
            self.net.backbone.compile()
        self.criterion = MultiTaskLoss(
            function=loss_cfg.function,
            focal_gamma=loss_cfg.focal_gamma,
            focal_alpha=scalar_focal_alpha(loss_cfg),
            label_smoothing=loss_cfg.label_smoothing,
            severity_weight=loss_cfg.severity_weight,
            action_weight=loss_cfg.action_weight,
        )
        # Weights from a checkpoint's buffers are used as they are; a new run computes them in setup.
        self.criterion.use_class_weights = uses_class_weights(loss_cfg)
        self.train_scores = MultiTaskScores()
        self.val_scores = MultiTaskScores()
        self.data_faults = {"train": DataFaultTally(), "val": DataFaultTally()}

    def setup(self, stage: str) -> None:
        loss_cfg = self.cfg.loss
        if stage != "fit" or not uses_class_weights(loss_cfg):
            return
        # Class weights from the training split's label counts, per task.
        labels = self.trainer.datamodule.train_labels()  # type: ignore[attr-defined]
        counts = {head: class_counts(labels[head], len(HEAD_CLASSES[head])) for head in HEADS}
        weights = {
            head: class_weights(
                counts[head], loss_cfg.class_weight_method, loss_cfg.effective_num_beta
            )
            for head in HEADS
        }
        self.criterion.set_class_weights(weights)
        rank_zero_only(log.info)(
            "class weights (%s)\n%s",
            loss_cfg.class_weight_method,
            format_class_weight_table(counts, weights, HEAD_CLASSES),
        )

    def forward(self, video: torch.Tensor, view_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(video, view_mask)

    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor | None:
        self.data_faults[stage].add(batch)
        if batch["video"] is None:
            # Every action of this batch was dropped (dataset.on_decode_error=skip).
            return self._empty_batch_loss() if stage == "train" else None
        logits = self(batch["video"], batch["view_mask"])
        loss, parts = self.criterion(logits, {head: batch[head] for head in HEADS})
        # Epoch means of the losses are kept with the scores (synchronised at the epoch's end);
        # each step logs only its own loss, on this rank, with no collective.
        getattr(self, f"{stage}_scores").update(
            logits, batch, torch.stack([loss, parts["offence_severity"], parts["action"]])
        )
        every = getattr(self.trainer, "log_every_n_steps", 1)
        if stage == "train" and (self.global_step + 1) % every == 0:
            # Only on the steps whose values reach the loggers: logging costs a little every time.
            self.log(
                "train/loss_step",
                loss.detach(),
                on_step=True,
                on_epoch=False,
                prog_bar=True,
                batch_size=batch["video"].shape[0],
            )
        return loss

    def _empty_batch_loss(self) -> torch.Tensor | None:
        """Alone, None: Lightning skips the step. Under DDP the other ranks still run their
        backward and wait in its gradient all-reduce, so this rank must join it: a zero loss over
        every parameter gives zero gradients (the optimiser steps with the others' gradients)."""
        if self.trainer.world_size <= 1:
            return None
        trainable = (p.sum() for p in self.parameters() if p.requires_grad)
        return sum(trainable, torch.zeros((), device=self.device)) * 0.0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Class probabilities of both heads for each action of the batch (with its id)."""
        dropped = {
            "dropped_action_ids": batch.get("dropped_action_ids", []),
            "faults": batch.get("faults", []),
        }
        if batch["video"] is None:
            return {"action_id": [], **dropped}
        logits = self(batch["video"], batch["view_mask"])
        predictions: dict[str, Any] = {"action_id": list(batch["action_id"])}
        for head in HEADS:
            predictions[head] = logits[head].float().softmax(dim=1).cpu()
        predictions.update(dropped)
        return predictions

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> MultiViewFoulModule:
        """Load a trained module. Its weights all come from the checkpoint, so the backbone is
        built without fetching pretrained weights (no download, no weights_path needed). Every
        problem (unreadable file, older schema, weights that do not fit the config) is one
        :class:`~mvfoul.errors.MvfoulError` line naming the checkpoint."""
        from mvfoul.training.checkpoints import read_checkpoint, require_keys

        checkpoint = read_checkpoint(path)
        require_keys(checkpoint, path, ("hyper_parameters.config", "state_dict"))
        return cls.from_checkpoint_dict(checkpoint, path)

    @classmethod
    def from_checkpoint_dict(
        cls, checkpoint: dict[str, Any], path: str | Path
    ) -> MultiViewFoulModule:
        config = dict(checkpoint["hyper_parameters"]["config"])
        model = dict(config["model"])
        model["pretrained"] = False
        model["weights_path"] = None
        config["model"] = model
        module = cls(config)
        load_trained_weights(
            module, checkpoint["state_dict"], path, config["model"].get("backbone")
        )
        return module.eval()

    def _log_epoch(self, stage: str) -> None:
        scores = getattr(self, f"{stage}_scores")
        # Already reduced over ranks by the confusion matrices: no second sync.
        for name, value in scores.scores(stage).items():
            self.log(name, value, prog_bar=name in PROGRESS_BAR_METRICS, sync_dist=False)
        scores.reset()
        tally = self.data_faults[stage]
        if not self.trainer.sanity_checking:
            for name, value in tally.metrics(stage).items():
                self.log(name, value, reduce_fx="sum", sync_dist=True)
            line = tally.summary(stage, self.current_epoch)
            if line:
                rank_zero_only(log.warning)(line)
        tally.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def configure_optimizers(self) -> Any:
        return configure_optimization(
            self.cfg, self.net, int(self.trainer.estimated_stepping_batches)
        )


def load_trained_weights(
    module: torch.nn.Module, state: dict[str, Any], path: str | Path, backbone: str | None
) -> None:
    """``module.load_state_dict(state)``, with a mismatch reported as one line (torch's own message
    lists every key, over many lines)."""
    expected = module.state_dict()
    reshaped = []
    for key, value in expected.items():
        given: Any = state.get(key)
        if hasattr(given, "shape") and tuple(given.shape) != tuple(value.shape):
            reshaped.append(f"{key} {list(given.shape)} vs {list(value.shape)}")
    problems = {
        "missing": [key for key in expected if key not in state],
        "unexpected": [key for key in state if key not in expected],
        "of another shape": reshaped,
    }
    parts = [
        f"{len(keys)} weight(s) {label} (e.g. {keys[0]})"
        for label, keys in problems.items()
        if keys
    ]
    if parts:
        raise MvfoulError(
            f"ckpt_path: {path}: its weights do not fit the model its config describes (model.backbone={backbone}): "
            f"{'; '.join(parts)}; the file was changed or written by another program"
        )
    module.load_state_dict(state)
