"""The LightningModule: multi-view network, two-task loss, metrics; its optimiser (head and
backbone parameter groups) and LR schedule."""

from __future__ import annotations

import logging
import math
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
from mvfoul.training.metrics import DataFaultTally, MultiTaskScores
from mvfoul.validate import Problems, cross_key_rule

log = logging.getLogger(__name__)

# The few numbers worth watching while an epoch runs; everything goes to the loggers.
PROGRESS_BAR_METRICS = ("val/loss", "val/sev_acc", "val/leaderboard")


class MultiViewFoulModule(L.LightningModule):
    """Trains :class:`MultiViewNet` on both tasks. The checkpoint's hyperparameters hold the whole
    config, so :meth:`from_checkpoint` rebuilds the model from the file alone (Lightning's
    ``load_from_checkpoint`` would fetch pretrained weights the checkpoint already holds)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg: DictConfig = OmegaConf.create(config)
        model_cfg = self.cfg.model
        loss_cfg = self.cfg.loss
        self.net = MultiViewNet(
            backbone=model_cfg.backbone,
            pretrained=model_cfg.pretrained,
            weights_path=model_cfg.weights_path,
            pooling=model_cfg.pooling,
            shared_dim=model_cfg.shared_dim,
            dropout_rate=model_cfg.dropout_rate,
            channels_last=bool(self.cfg.system.get("channels_last", False)),
        )
        if self.cfg.system.get("compile", False):
            # In place, so the state dict keeps its keys: checkpoints load with or without it.
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
        labels = self.trainer.datamodule.train_labels()  # type: ignore[attr-defined]
        counts = {head: class_counts(labels[head], len(HEAD_CLASSES[head])) for head in HEADS}
        method = loss_cfg.class_weight_method
        weights = {
            head: class_weights(counts[head], method, loss_cfg.effective_num_beta) for head in HEADS
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
            # Every action of this batch was dropped (dataset.on_decode_error=skip). Alone, None:
            # Lightning skips the step. Under DDP the other ranks wait in the gradient all-reduce,
            # so join it: a zero loss over every parameter gives zero gradients.
            if stage == "val" or self.trainer.world_size <= 1:
                return None
            trainable = (p.sum() for p in self.parameters() if p.requires_grad)
            return sum(trainable, torch.zeros((), device=self.device)) * 0.0
        logits = self(batch["video"], batch["view_mask"])
        loss, parts = self.criterion(logits, {head: batch[head] for head in HEADS})
        # Epoch means of the losses are kept with the scores (synchronised at the epoch's end);
        # each step logs only its own loss, on this rank, with no collective.
        getattr(self, f"{stage}_scores").update(
            logits, batch, torch.stack([loss, parts["offence_severity"], parts["action"]])
        )
        every = getattr(self.trainer, "log_every_n_steps", 1)  # set by Lightning, undeclared
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

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Class probabilities of both heads for each action of the batch (with its id)."""
        predictions: dict[str, Any] = {
            "action_id": [],
            "dropped_action_ids": batch.get("dropped_action_ids", []),
            "faults": batch.get("faults", []),
        }
        if batch["video"] is not None:
            logits = self(batch["video"], batch["view_mask"])
            predictions["action_id"] = list(batch["action_id"])
            for head in HEADS:
                predictions[head] = logits[head].float().softmax(dim=1).cpu()
        return predictions

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> MultiViewFoulModule:
        """Every problem (unreadable file, older schema, weights that do not fit the config) is one
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
        # Every weight comes from the checkpoint: no download, no weights_path needed.
        config["model"] = {**config["model"], "pretrained": False, "weights_path": None}
        module = cls(config)
        # A mismatch is one line (torch's own message lists every key, over many lines).
        state = checkpoint["state_dict"]
        expected = module.state_dict()
        problems = {
            "missing": [key for key in expected if key not in state],
            "unexpected": [key for key in state if key not in expected],
            "of another shape": [
                f"{key} {list(state[key].shape)} vs {list(value.shape)}"
                for key, value in expected.items()
                if hasattr(state.get(key), "shape") and tuple(state[key].shape) != value.shape
            ],
        }
        parts = [
            f"{len(keys)} weight(s) {label} (e.g. {keys[0]})"
            for label, keys in problems.items()
            if keys
        ]
        if parts:
            raise MvfoulError(
                f"ckpt_path: {path}: its weights do not fit the model its config describes "
                f"(model.backbone={config['model'].get('backbone')}): {'; '.join(parts)}; the file "
                "was changed or written by another program"
            )
        module.load_state_dict(state)
        return module.eval()

    def _log_epoch(self, stage: str) -> None:
        scores = getattr(self, f"{stage}_scores")
        # Already reduced over the ranks (MultiTaskScores): no second sync.
        for name, value in scores.scores(stage).items():
            self.log(name, value, prog_bar=name in PROGRESS_BAR_METRICS, sync_dist=False)
        scores.reset()
        tally = self.data_faults[stage]
        self.data_faults[stage] = DataFaultTally()
        if not self.trainer.sanity_checking:
            for name, value in tally.metrics(stage).items():
                self.log(name, value, reduce_fx="sum", sync_dist=True)
            line = tally.summary(stage, self.current_epoch)
            if line:
                rank_zero_only(log.warning)(line)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def configure_optimizers(self) -> Any:
        return configure_optimization(
            self.cfg, self.net, int(self.trainer.estimated_stepping_batches)
        )


def group_learning_rates(training: DictConfig) -> dict[str, float]:
    """Learning rate of each parameter group; a null rate falls back to learning_rate."""
    base = float(training.learning_rate)
    return {
        "head": float(training.head_lr) if training.head_lr is not None else base,
        "backbone": float(training.backbone_lr) if training.backbone_lr is not None else base,
    }


def build_optimizer(training: DictConfig, net: MultiViewNet) -> torch.optim.Optimizer:
    rates = group_learning_rates(training)
    groups = [
        {"name": "head", "params": net.head_parameters(), "lr": rates["head"]},
        {"name": "backbone", "params": net.backbone_parameters(), "lr": rates["backbone"]},
    ]
    name = training.optimizer
    if name == "sgd":
        return torch.optim.SGD(
            groups, momentum=training.momentum, weight_decay=training.weight_decay
        )
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=training.weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, weight_decay=training.weight_decay)
    # Reached only by callers that skip validate_config (the schema lists the choices).
    raise ValueError(f"training.optimizer {name!r} is not one of adamw, adam, sgd")


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Per step: linear warmup from ~0 to each group's base LR, then cosine decay to ``min_lr``.
    The floor is absolute and each step's LR is computed from ``base_lrs``, so a group whose base
    LR changes mid-run (the backbone LR boost) keeps the schedule's shape and floor."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr: float
    ) -> None:
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.min_lr = float(min_lr)
        super().__init__(optimizer)

    def lr_at(self, step: int, base_lr: float) -> float:
        if step < self.warmup_steps:
            return base_lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = min(self.min_lr, base_lr)
        return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float | torch.Tensor]:
        return [self.lr_at(self.last_epoch, float(base)) for base in self.base_lrs]


def build_scheduler(
    training: DictConfig,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    monitor: str,
    mode: str,
) -> dict[str, Any] | None:
    """Lightning's lr_scheduler config for ``training.scheduler``: cosine, step, plateau or none."""
    name = training.scheduler
    if name == "none":
        return None
    if name == "cosine":
        steps_per_epoch = max(1, total_steps // max(1, training.max_epochs))
        warmup_steps = int(round(training.warmup_epochs * steps_per_epoch))
        cosine = WarmupCosineLR(optimizer, warmup_steps, total_steps, training.min_lr)
        return {"scheduler": cosine, "interval": "step", "name": "lr"}
    if name == "step":
        step = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=training.step_size, gamma=training.gamma
        )
        return {"scheduler": step, "interval": "epoch", "name": "lr"}
    if name == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min" if mode == "min" else "max",
            factor=training.plateau_factor,
            patience=training.plateau_patience,
        )
        return {"scheduler": plateau, "interval": "epoch", "monitor": monitor, "name": "lr"}
    raise ValueError(f"training.scheduler {name!r} is not one of cosine, step, plateau, none")


def configure_optimization(cfg: DictConfig, net: MultiViewNet, total_steps: int) -> Any:
    """What ``LightningModule.configure_optimizers`` returns for the composed config ``cfg``."""
    optimizer = build_optimizer(cfg.training, net)
    monitor = cfg.experiment.monitor
    scheduler = build_scheduler(cfg.training, optimizer, total_steps, monitor, cfg.experiment.mode)
    return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}


@cross_key_rule("training")
def check_schedule(cfg: DictConfig, p: Problems) -> None:
    """Cosine decay ends below every rate, and warmup ends before training does."""
    training = cfg.training
    configured = (training.learning_rate, training.head_lr, training.backbone_lr)
    rates = [rate for rate in configured if rate is not None and rate > 0]
    if training.scheduler == "cosine" and rates and training.min_lr >= min(rates):
        p.add(
            "training.min_lr",
            f"{training.min_lr!r} must be below every learning rate (smallest: {min(rates)!r})",
        )
    if training.warmup_epochs >= training.max_epochs >= 1:
        p.add(
            "training.warmup_epochs",
            f"{training.warmup_epochs!r} must be shorter than training.max_epochs ({training.max_epochs})",
        )
