"""The LightningModule: multi-view network, two-task loss, metrics, optimiser and schedule."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mvfoul.labels import ACTION_CLASSES, OFFENCE_SEVERITY_CLASSES
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


@rank_zero_only
def _warn_rank_zero(message: str) -> None:
    log.warning(message)


CLASS_NAMES = {"offence_severity": OFFENCE_SEVERITY_CLASSES, "action": ACTION_CLASSES}

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
        m = cfg.model
        self.net = MultiViewNet(
            backbone=m.backbone,
            pretrained=m.pretrained,
            weights_path=m.weights_path,
            pooling=m.pooling,
            shared_dim=m.shared_dim,
            dropout_rate=m.dropout_rate,
            channels_last=bool(cfg.system.get("channels_last", False)),
        )
        if cfg.system.get("compile", False):
            # In place (nn.Module.compile), so the state dict keeps its keys and checkpoints load
            # with or without it. Compiled at the first forward pass.
            self.net.backbone.compile()
        lo = cfg.loss
        self.criterion = MultiTaskLoss(
            function=lo.function,
            focal_gamma=lo.focal_gamma,
            focal_alpha=scalar_focal_alpha(lo),
            label_smoothing=lo.label_smoothing,
            severity_weight=lo.severity_weight,
            action_weight=lo.action_weight,
        )
        # Weights from a checkpoint's buffers are used as they are; a new run computes them in setup.
        self.criterion.use_class_weights = uses_class_weights(lo)
        self.train_scores = MultiTaskScores()
        self.val_scores = MultiTaskScores()
        self.data_faults = {"train": DataFaultTally(), "val": DataFaultTally()}

    def setup(self, stage: str) -> None:
        if stage == "fit" and uses_class_weights(self.cfg.loss):
            datamodule: Any = getattr(self.trainer, "datamodule", None)
            self._set_class_weights(datamodule.train_labels())

    def _set_class_weights(self, labels: dict[str, list[int]]) -> None:
        """Class weights from the training split's label counts, per task."""
        lo = self.cfg.loss
        counts = {head: class_counts(labels[head], len(CLASS_NAMES[head])) for head in HEADS}
        weights = {
            head: class_weights(counts[head], lo.class_weight_method, lo.effective_num_beta)
            for head in HEADS
        }
        self.criterion.set_class_weights(weights)
        self._print_class_weights(counts, weights)

    @rank_zero_only
    def _print_class_weights(self, counts: dict, weights: dict) -> None:
        log.info(
            "%s (%s)\n%s",
            "class weights",
            self.cfg.loss.class_weight_method,
            format_class_weight_table(counts, weights, CLASS_NAMES),
        )

    def _scores(self, stage: str) -> MultiTaskScores:
        return self.train_scores if stage == "train" else self.val_scores

    def forward(self, video: torch.Tensor, view_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(video, view_mask)

    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor | None:
        self.data_faults[stage].add(batch)
        if batch["video"] is None:
            # Every action of this batch was dropped (dataset.on_decode_error=skip).
            return self._empty_batch_loss() if stage == "train" else None
        logits = self(batch["video"], batch["view_mask"])
        targets = {head: batch[head] for head in HEADS}
        loss, parts = self.criterion(logits, targets)
        # Epoch means of the losses are kept with the scores (synchronised at the epoch's end);
        # each step logs only its own loss, on this rank, with no collective.
        self._scores(stage).update(
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
        """What a training step with nothing to learn from returns. Alone, None: Lightning skips
        the step. Under DDP the other ranks still run their backward and wait in its gradient
        all-reduce, so this rank must join it: a zero loss over every parameter gives zero
        gradients (the batch counts for nothing; the optimiser still steps, with the others'
        averaged gradients)."""
        if self.trainer.world_size <= 1:
            return None
        return (
            sum(
                (p.sum() for p in self.parameters() if p.requires_grad),
                torch.zeros((), device=self.device),
            )
            * 0.0
        )

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
        return {
            "action_id": list(batch["action_id"]),
            **{head: logits[head].float().softmax(dim=1).cpu() for head in HEADS},
            **dropped,
        }

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> MultiViewFoulModule:
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
        config["model"] = {**config["model"], "pretrained": False, "weights_path": None}
        module = cls(config)
        load_trained_weights(
            module, checkpoint["state_dict"], path, config["model"].get("backbone")
        )
        return module.eval()

    def _log_scores(self, stage: str) -> None:
        scores = self._scores(stage).scores(stage)
        self._scores(stage).reset()
        # Already reduced over ranks by the confusion matrices: no second sync.
        for name, value in scores.items():
            self.log(name, value, prog_bar=name in PROGRESS_BAR_METRICS, sync_dist=False)
        self._report_data_faults(stage)

    def _report_data_faults(self, stage: str) -> None:
        tally = self.data_faults[stage]
        if not self.trainer.sanity_checking:
            for name, value in tally.metrics(stage).items():
                self.log(name, value, reduce_fx="sum", sync_dist=True)
            line = tally.summary(stage, self.current_epoch)
            if line:
                _warn_rank_zero(line)
        tally.reset()

    def on_train_epoch_end(self) -> None:
        self._log_scores("train")

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def configure_optimizers(self) -> Any:
        return configure_optimization(
            self.cfg, self.net, int(self.trainer.estimated_stepping_batches)
        )


def load_trained_weights(
    module: torch.nn.Module, state: dict[str, Any], path: str | Path, backbone: str | None
) -> None:
    """``module.load_state_dict(state)``, with a mismatch reported as one line (torch's own message
    lists every key, over many lines)."""
    from mvfoul.errors import MvfoulError

    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of another shape", mismatched),
        ):
            if keys:
                parts.append(f"{len(keys)} weight(s) {label} (e.g. {keys[0]})")
        raise MvfoulError(
            f"ckpt_path: {path}: its weights do not fit the model its config describes (model.backbone={backbone}): "
            f"{'; '.join(parts)}; the file was changed or written by another program"
        )
    module.load_state_dict(state)
