"""Gradual unfreezing of the backbone and the backbone LR boost: the ``freezing`` config group.

:class:`GradualUnfreezing` is a Lightning callback built on
:class:`~lightning.pytorch.callbacks.BaseFinetuning`:

* **gradual fine-tuning** (``freezing.gradual_finetuning`` with ``freezing_strategy``
  ``progressive`` or ``adaptive``): the whole backbone starts frozen (pooling and heads train);
  ``unfreeze_blocks`` more blocks of :meth:`Backbone.blocks() <mvfoul.models.backbones.Backbone.blocks>`
  become trainable, top-down (the last block first), at each epoch of ``unfreeze_schedule``
  (``progressive``) or after ``patience_epochs`` validation epochs in which ``experiment.monitor``
  did not improve by at least ``min_improvement`` (``adaptive``). ``none``: nothing is frozen.
* **frozen** means ``requires_grad=False`` *and* the block's BatchNorm layers in eval mode, so
  their running statistics do not move. Lightning does not call ``model.train()`` at epoch
  starts any more, but it does restore the modes captured before each validation run, a module
  overriding ``on_validation_model_train`` puts the whole model back in train mode, and user
  code may call ``.train()``; so the eval mode of frozen BatchNorm is re-asserted at every
  train epoch start and every train batch start. (Frozen BatchNorm also gets
  ``track_running_stats=False``, BaseFinetuning's own convention, as a second guard.)
* **no new parameter groups.** The module builds its optimiser with every backbone parameter
  already in the ``"backbone"`` group (frozen ones have no gradient, so the optimiser skips
  them). Unfreezing only flips ``requires_grad`` and the BatchNorm mode; the parameters then train
  at that group's current LR, under the running scheduler. BaseFinetuning's usual
  ``unfreeze_and_add_param_group`` would add groups the running schedule does not know about,
  so its ``on_train_epoch_start`` and ``on_fit_start`` (which store and restore those groups)
  are overridden here.
* **backbone LR boost** (``enable_backbone_lr_boost``): once at least half of the backbone's
  blocks are trainable, the backbone group's base LR becomes ``head_lr *
  backbone_lr_ratio_after_half``, exactly once; its current LR becomes the new base times the
  schedule's current multiplier (current LR / old base) — for the warmup-cosine schedule, whose
  floor is absolute, the schedule's value at the new base — and the scheduler's ``base_lrs`` and
  the group's ``initial_lr`` are updated so the schedule continues from the new base.

Logged every train epoch (through ``pl_module.log``): ``freezing/trainable_blocks``,
``freezing/backbone_trainable_fraction`` (trainable backbone parameters / all backbone
parameters, counted in elements) and ``freezing/backbone_lr_boost`` (1.0 in the epoch the boost
fires, 0.0 in every other epoch).

Resuming: which blocks train at epoch ``e`` follows from ``e`` for ``progressive``; the
``adaptive`` progress (blocks unfrozen, best value, bad epochs) and whether the boost has fired
are kept in :meth:`GradualUnfreezing.state_dict`, which Lightning saves in checkpoints. The boosted
LR itself is restored with the optimiser's and scheduler's own state.

**Under DDP** (more than one process) freezing cannot flip ``requires_grad``: DDP registers,
when it wraps the model, the parameters that require gradients at that moment, and a parameter
unfrozen later would never have its gradients averaged, so the replicas would drift apart. There,
every parameter keeps ``requires_grad=True`` (all of them are in DDP's all-reduce from the start)
and a frozen block is *masked*: its gradients are dropped (set to None) just before each
optimiser step, so the optimiser leaves it alone (no update, no weight decay, no momentum), and
its BatchNorm layers are in eval mode as usual. Re-wrapping the model at each unfreeze would need
Lightning's strategy internals; masking costs only the backward pass through the frozen blocks
in the epochs before they unfreeze. A single process keeps ``requires_grad=False``, which skips
that backward pass.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from omegaconf import DictConfig
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mvfoul.config import FREEZING_STRATEGIES, MONITOR_MODES
from mvfoul.training.optim import WarmupCosineLR

log = logging.getLogger(__name__)

# Names of the metrics this callback logs (one value per train epoch).
TRAINABLE_BLOCKS_METRIC = "freezing/trainable_blocks"
TRAINABLE_FRACTION_METRIC = "freezing/backbone_trainable_fraction"
BOOST_METRIC = "freezing/backbone_lr_boost"

# Optimiser param-group names, as built by mvfoul.training.optim.build_optimizer.
HEAD_GROUP = "head"
BACKBONE_GROUP = "backbone"


class GradualUnfreezing(BaseFinetuning):
    """Freeze the backbone, unfreeze it top-down by schedule or on plateaus, boost its LR once.

    Args:
        strategy: ``progressive``, ``adaptive`` or ``none`` (nothing frozen; only the boost).
        unfreeze_blocks: blocks unfrozen at each step, from the top.
        unfreeze_schedule: ``progressive``: epochs (0-based, Lightning's ``current_epoch``) at
            whose start ``unfreeze_blocks`` more blocks become trainable.
        patience_epochs: ``adaptive``: validation runs without improvement before the next step.
        min_improvement: ``adaptive``: the smallest change of ``monitor`` (in its own units) that
            counts as an improvement.
        monitor, mode: ``adaptive``: the metric in ``trainer.callback_metrics`` and whether
            higher (``max``) or lower (``min``) is better.
        enable_backbone_lr_boost, backbone_lr_ratio_after_half: the boost (see module doc).
        head_lr: the head group's configured base LR; None = the head group's ``initial_lr``
            (or ``lr``) when the boost fires.
        backbone_lr: the backbone group's configured base LR, the "old base" for schedulers
            without ``base_lrs`` (plateau, none); None = the group's ``initial_lr`` (or ``lr``).
    """

    def __init__(
        self,
        strategy: str = "progressive",
        unfreeze_blocks: int = 1,
        unfreeze_schedule: Sequence[int] = (5, 10, 15),
        patience_epochs: int = 2,
        min_improvement: float = 0.001,
        monitor: str = "val/sev_acc",
        mode: str = "max",
        enable_backbone_lr_boost: bool = True,
        backbone_lr_ratio_after_half: float = 0.6,
        head_lr: float | None = None,
        backbone_lr: float | None = None,
    ) -> None:
        super().__init__()
        if strategy not in FREEZING_STRATEGIES:
            raise ValueError(
                f"freezing_strategy {strategy!r} is not one of {', '.join(FREEZING_STRATEGIES)}"
            )
        if mode not in MONITOR_MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MONITOR_MODES)}")
        if unfreeze_blocks < 1:
            raise ValueError(f"unfreeze_blocks must be >= 1, got {unfreeze_blocks}")
        if patience_epochs < 1:
            raise ValueError(f"patience_epochs must be >= 1, got {patience_epochs}")
        if backbone_lr_ratio_after_half <= 0:
            raise ValueError(
                f"backbone_lr_ratio_after_half must be > 0, got {backbone_lr_ratio_after_half}"
            )
        self.strategy = strategy
        self.unfreeze_blocks = int(unfreeze_blocks)
        self.unfreeze_schedule = sorted(int(e) for e in unfreeze_schedule)
        self.patience_epochs = int(patience_epochs)
        self.min_improvement = float(min_improvement)
        self.monitor = monitor
        self.mode = mode
        self.enable_backbone_lr_boost = bool(enable_backbone_lr_boost)
        self.backbone_lr_ratio_after_half = float(backbone_lr_ratio_after_half)
        self.head_lr = None if head_lr is None else float(head_lr)
        self.backbone_lr = None if backbone_lr is None else float(backbone_lr)

        # Checkpointed state (see state_dict).
        self.unfrozen_blocks = 0  # adaptive: blocks unfrozen so far, from the top
        self.best: float | None = None  # adaptive: best value of the monitor so far
        self.bad_epochs = 0  # adaptive: validation runs since the last improvement or unfreeze
        self.boosted = False  # the backbone LR boost has fired

        # Per-run, rebuilt from the module.
        self._backbone: nn.Module | None = None
        self._blocks: list[nn.Module] = []
        self._frozen_bn: list[_BatchNorm] = []
        self._trainable = 0  # blocks trainable now, from the top
        self.masking = False  # DDP: frozen blocks keep requires_grad; their gradients are dropped
        self._masked: list[nn.Parameter] = []
        self._boosted_this_epoch = False
        self._warned: set[str] = set()

    # --- what trains when ------------------------------------------------------------------

    @property
    def gradual(self) -> bool:
        """Whether this callback freezes anything at all."""
        return self.strategy != "none"

    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    def trainable_blocks_at(self, epoch: int) -> int:
        """How many blocks (from the top) train during ``epoch``."""
        n = self.num_blocks
        if self.strategy == "none":
            return n
        if self.strategy == "progressive":
            steps = sum(1 for e in self.unfreeze_schedule if e <= epoch)
            return min(n, steps * self.unfreeze_blocks)
        return min(n, self.unfrozen_blocks)

    # --- BaseFinetuning hooks ----------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._resolve(pl_module)
        self.masking = trainer.world_size > 1
        # Freeze only for fitting: validate/test/predict never train, and freezing there would
        # leave the module changed behind the user's back.
        if stage == "fit":
            super().setup(trainer, pl_module, stage)  # freeze_before_training + DeepSpeed check

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        """Freeze the whole backbone (``requires_grad=False``) when unfreezing is gradual.

        The BatchNorm layers are switched to eval mode at the first train epoch start rather than
        here: Lightning warns about modules in eval mode at the start of training, and nothing runs
        a training forward pass in between (the sanity check runs in eval mode anyway).
        """
        if self.gradual and not self.masking:
            self.freeze(self._blocks, train_bn=False)
        self._trainable = 0 if self.gradual else self.num_blocks

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # After DDP's all-reduce (every rank drops the same gradients) and before clipping, so
        # the clipped norm is that of the parameters that train.
        for p in self._masked:
            p.grad = None

    def finetune_function(
        self, pl_module: pl.LightningModule, epoch: int, optimizer: torch.optim.Optimizer
    ) -> None:
        """Make the blocks due at ``epoch`` trainable (idempotent: the state follows from the
        epoch and the checkpointed adaptive progress) and fire the LR boost when it is due."""
        self._apply(self.trainable_blocks_at(epoch))
        if (
            self.enable_backbone_lr_boost
            and not self.boosted
            and 2 * self._count_trainable_blocks() >= self.num_blocks
        ):
            if self._boost(pl_module.trainer, optimizer):
                self._boosted_this_epoch = True

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # BaseFinetuning would replace the optimiser's param groups with the ones it stored in a
        # checkpoint; we never add groups, so there is nothing to restore.
        self._restarting = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._boosted_this_epoch = False
        optimizers = list(trainer.optimizers)
        if not optimizers:  # pragma: no cover - fitting always has an optimiser
            self._apply(self.trainable_blocks_at(trainer.current_epoch))
        for optimizer in optimizers:
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
        if (
            self.enable_backbone_lr_boost
            and not self.boosted
            and 2 * self._count_trainable_blocks() >= self.num_blocks
        ):
            self._warn_once(
                "no_group",
                "freezing: the backbone LR boost is due but no optimiser param group holds the "
                "backbone's parameters; the boost is skipped",
            )
        self._log_epoch(pl_module)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Cheap (a list of BN modules): guards against anything that switched the model back to
        # train mode since the epoch started (e.g. an overridden on_validation_model_train after a
        # mid-epoch validation).
        self._assert_frozen_bn_eval()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before the
        # module's, where mvfoul logs its validation scores (EarlyStopping uses this hook too).
        if self.strategy != "adaptive" or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            self._warn_once(
                "no_monitor",
                f"freezing: adaptive unfreezing watches {self.monitor!r}, which was not logged; "
                f"logged: {', '.join(sorted(trainer.callback_metrics)) or 'nothing'}",
            )
            return
        self.observe(float(value), is_global_zero=trainer.is_global_zero)

    # --- adaptive ----------------------------------------------------------------------------

    def observe(self, value: float, is_global_zero: bool = True) -> bool:
        """Feed one validation value of the monitor; True when it unfreezes more blocks (they
        train from the next train epoch start)."""
        if self.num_blocks and self.unfrozen_blocks >= self.num_blocks:
            return False  # nothing left to unfreeze
        if not math.isnan(value) and self.best is None:
            self.best, self.bad_epochs = value, 0
            return False
        if self._improved(value):
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.patience_epochs:
            return False
        before = self.unfrozen_blocks
        self.unfrozen_blocks += self.unfreeze_blocks
        if self.num_blocks:
            self.unfrozen_blocks = min(self.num_blocks, self.unfrozen_blocks)
        self.bad_epochs = 0
        if is_global_zero:
            log.info(
                "freezing: %s has not improved by %g for %d validation epochs (best %s): "
                "unfreezing backbone blocks %d -> %d of %s from the next epoch",
                self.monitor,
                self.min_improvement,
                self.patience_epochs,
                self.best,
                before,
                self.unfrozen_blocks,
                self.num_blocks or "?",
            )
        return True

    def _improved(self, value: float) -> bool:
        if math.isnan(value) or self.best is None:
            return False
        gain = value - self.best if self.mode == "max" else self.best - value
        # "by at least min_improvement", tolerant of float noise (0.601 - 0.6 < 0.001 in floats);
        # with min_improvement 0, an equal value is not an improvement.
        return gain > 0 and (
            gain >= self.min_improvement or math.isclose(gain, self.min_improvement, rel_tol=1e-9)
        )

    # --- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "unfrozen_blocks": self.unfrozen_blocks,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "boosted": self.boosted,
            # BaseFinetuning's key, always empty here: no param groups are ever added.
            "internal_optimizer_metadata": {},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Not BaseFinetuning.load_state_dict: it would treat an unknown dict as old-style param
        # group metadata and make on_fit_start rebuild the optimiser's groups from it.
        self.unfrozen_blocks = int(state_dict.get("unfrozen_blocks", 0))
        best = state_dict.get("best")
        self.best = None if best is None else float(best)
        self.bad_epochs = int(state_dict.get("bad_epochs", 0))
        self.boosted = bool(state_dict.get("boosted", False))
        self._restarting = False

    # --- internals ---------------------------------------------------------------------------

    def _resolve(self, pl_module: pl.LightningModule) -> None:
        backbone = _find_backbone(pl_module)
        blocks = list(backbone.blocks())  # type: ignore[operator]  # checked by _find_backbone
        if not blocks:
            raise ValueError(
                f"freezing: the backbone {type(backbone).__name__} has no blocks to unfreeze"
            )
        self._backbone, self._blocks = backbone, blocks

    def _apply(self, trainable: int) -> None:
        """Blocks ``[n - trainable, n)`` trainable, the others frozen with BN in eval mode
        (frozen by ``requires_grad=False``, or under DDP masked; see the module docstring)."""
        if not self.gradual:
            self._frozen_bn, self._masked, self._trainable = [], [], self.num_blocks
            return
        n = self.num_blocks
        frozen_bn: list[_BatchNorm] = []
        masked: list[nn.Parameter] = []
        for i, block in enumerate(self._blocks):
            bns = _batchnorms(block)
            if i >= n - trainable:
                self.make_trainable(block)  # requires_grad, BN track_running_stats back on
                for bn in bns:
                    bn.train(True)
                continue
            if self.masking:
                masked.extend(block.parameters())
            else:
                self.freeze(block, train_bn=False)
            for bn in bns:
                bn.eval()
            frozen_bn.extend(bns)
        self._frozen_bn, self._masked, self._trainable = frozen_bn, masked, min(n, trainable)

    def _assert_frozen_bn_eval(self) -> None:
        for bn in self._frozen_bn:
            if bn.training:
                bn.eval()

    def _count_trainable_blocks(self) -> int:
        return self._trainable

    def _trainable_fraction(self) -> float:
        assert self._backbone is not None
        frozen = {
            id(p)
            for block in self._blocks[: self.num_blocks - self._trainable]
            for p in block.parameters()
        }
        total = trainable = 0
        for p in self._backbone.parameters():
            total += p.numel()
            if id(p) not in frozen:
                trainable += p.numel()
        return trainable / total if total else 1.0

    def _backbone_group_index(self, optimizer: torch.optim.Optimizer) -> int | None:
        for i, group in enumerate(optimizer.param_groups):
            if group.get("name") == BACKBONE_GROUP:
                return i
        # An optimiser built elsewhere: the group holding the backbone's parameters.
        assert self._backbone is not None
        ids = {id(p) for p in self._backbone.parameters()}
        for i, group in enumerate(optimizer.param_groups):
            if any(id(p) in ids for p in group["params"]):
                return i
        return None

    def _head_base_lr(self, optimizer: torch.optim.Optimizer, backbone_index: int) -> float:
        if self.head_lr is not None:
            return self.head_lr
        others = [g for i, g in enumerate(optimizer.param_groups) if i != backbone_index]
        named = [g for g in others if g.get("name") == HEAD_GROUP] or others
        if not named:
            raise ValueError("freezing: the LR boost needs a head param group (or head_lr)")
        return float(named[0].get("initial_lr", named[0]["lr"]))

    def _boost(self, trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> bool:
        index = self._backbone_group_index(optimizer)
        if index is None:
            return False
        group = optimizer.param_groups[index]
        new_base = self._head_base_lr(optimizer, index) * self.backbone_lr_ratio_after_half

        schedulers = [
            config.scheduler
            for config in (trainer.lr_scheduler_configs if trainer is not None else [])
            if getattr(config.scheduler, "optimizer", None) is optimizer
        ]
        old_base = None
        for scheduler in schedulers:
            base_lrs = getattr(scheduler, "base_lrs", None)
            if base_lrs is not None and index < len(base_lrs):
                old_base = float(base_lrs[index])
                break
        if old_base is None:  # plateau (no base_lrs) or no scheduler
            if "initial_lr" in group:
                old_base = float(group["initial_lr"])
            elif self.backbone_lr is not None:
                old_base = self.backbone_lr
            else:
                old_base = float(group["lr"])
        current = float(group["lr"])
        multiplier = current / old_base if old_base > 0 else 1.0
        new_lr = new_base * multiplier
        cosine = next((s for s in schedulers if isinstance(s, WarmupCosineLR)), None)
        if cosine is not None:
            # Its floor is absolute: recompute from the new base rather than scale.
            new_lr = cosine.lr_at(cosine.last_epoch, new_base)

        _set_lr(group, "lr", new_lr)
        group["initial_lr"] = new_base
        for scheduler in schedulers:
            base_lrs = getattr(scheduler, "base_lrs", None)
            if base_lrs is not None and index < len(base_lrs):
                base_lrs[index] = new_base
            last = getattr(scheduler, "_last_lr", None)
            if isinstance(last, list) and index < len(last):
                last[index] = new_lr
        self.boosted = True
        if trainer is None or trainer.is_global_zero:
            epoch = trainer.current_epoch if trainer is not None else "?"
            log.info(
                "freezing: %d of %d backbone blocks trainable at epoch %s: backbone LR boost, "
                "base LR %.3g -> %.3g (head LR x %g), current LR %.3g -> %.3g (schedule multiplier %.4g)",
                self._count_trainable_blocks(),
                self.num_blocks,
                epoch,
                old_base,
                new_base,
                self.backbone_lr_ratio_after_half,
                current,
                new_lr,
                multiplier,
            )
        return True

    def _log_epoch(self, pl_module: pl.LightningModule) -> None:
        metrics = {
            TRAINABLE_BLOCKS_METRIC: float(self._count_trainable_blocks()),
            TRAINABLE_FRACTION_METRIC: self._trainable_fraction(),
            BOOST_METRIC: 1.0 if self._boosted_this_epoch else 0.0,
        }
        # The same numbers on every rank: no sync. batch_size=1: there is no batch at epoch start.
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=False, batch_size=1)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


# --- helpers -------------------------------------------------------------------------------------


def _find_backbone(pl_module: nn.Module) -> nn.Module:
    """The module's backbone: ``pl_module.net.backbone`` (mvfoul) or ``pl_module.backbone``;
    it must have ``blocks()``."""
    for owner in (getattr(pl_module, "net", None), pl_module):
        backbone = getattr(owner, "backbone", None) if owner is not None else None
        if isinstance(backbone, nn.Module) and callable(getattr(backbone, "blocks", None)):
            return backbone
    raise ValueError(
        f"freezing: {type(pl_module).__name__} has no backbone with blocks() "
        "(expected .net.backbone or .backbone, an mvfoul Backbone)"
    )


def _batchnorms(modules: nn.Module | Iterable[nn.Module]) -> list[_BatchNorm]:
    return [m for m in BaseFinetuning.flatten_modules(modules) if isinstance(m, _BatchNorm)]


def _set_lr(group: dict[str, Any], key: str, value: float) -> None:
    if isinstance(group.get(key), torch.Tensor):
        group[key].fill_(value)  # tensor LRs (capturable optimisers) are updated in place
    else:
        group[key] = value


def _node(cfg: Any, name: str) -> Any:
    """``cfg.<name>`` of a whole config, or ``cfg`` itself when it is already that node."""
    if isinstance(cfg, (DictConfig, Mapping)) and name in cfg:
        return cfg[name]
    return cfg


def gradual_finetuning_enabled(cfg: Any) -> bool:
    """Whether ``freezing`` (or a whole config holding it) freezes anything."""
    f = _node(cfg, "freezing")
    return bool(f.gradual_finetuning) and f.freezing_strategy != "none"


def build_freezing_callback(cfg: DictConfig) -> GradualUnfreezing | None:
    """The callback for the composed config (``freezing``, ``training``, ``experiment``); None when
    there is nothing to do (no gradual fine-tuning and no LR boost).

    With ``freezing_strategy: none`` (or ``gradual_finetuning: false``) and the boost enabled,
    every block trains from the start, so the boost fires at the first epoch.
    """
    from mvfoul.training.optim import group_learning_rates  # imports the model stack

    f = cfg.freezing
    gradual = gradual_finetuning_enabled(cfg)
    if not gradual and not f.enable_backbone_lr_boost:
        return None
    rates = group_learning_rates(cfg.training)
    return GradualUnfreezing(
        strategy=f.freezing_strategy if gradual else "none",
        unfreeze_blocks=f.unfreeze_blocks,
        unfreeze_schedule=list(f.unfreeze_schedule),
        patience_epochs=f.patience_epochs,
        min_improvement=f.min_improvement,
        monitor=cfg.experiment.monitor,
        mode=cfg.experiment.mode,
        enable_backbone_lr_boost=f.enable_backbone_lr_boost,
        backbone_lr_ratio_after_half=f.backbone_lr_ratio_after_half,
        head_lr=rates["head"],
        backbone_lr=rates["backbone"],
    )
