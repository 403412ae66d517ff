"""Gradual unfreezing and the backbone LR boost (mvfoul.training.freezing), mostly on
real Trainer runs.

Every run uses the tiny backbone (4 conv3d-BN-ReLU blocks) on a few in-memory batches shaped like
mvfoul's (2 actions x 2 views x 3 x 4 frames x 16 px), so each fit takes about a second on CPU.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from conftest import compose_config
from mvfoul.models.net import MultiViewNet
from mvfoul.training.freezing import (
    BOOST_METRIC,
    TRAINABLE_BLOCKS_METRIC,
    TRAINABLE_FRACTION_METRIC,
    GradualUnfreezing,
    boost_backbone_lr,
    build_freezing_callback,
)
from mvfoul.training.module import MultiViewFoulModule, configure_optimization

# Lightning's advice for real runs (worker count, log interval) is noise for in-memory batches.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers",
    "ignore:The number of training batches.*",
)

HEAD_LR, BACKBONE_LR, RATIO = 1e-3, 1e-4, 0.6
BOOSTED = HEAD_LR * RATIO  # 6e-4
NUM_BLOCKS = 4


# --- fixtures: config, data, a minimal module, probes ---------------------------------------------


def make_cfg(**overrides: Any) -> DictConfig:
    """quick_test with gradual progressive unfreezing at epochs 1, 2, 3 (one block each), head LR
    1e-3, backbone LR 1e-4, no scheduler; ``overrides`` are Hydra overrides by key."""
    base = {
        "freezing": "progressive",
        "freezing.unfreeze_schedule": "[1,2,3]",
        "freezing.unfreeze_blocks": 1,
        "model.shared_dim": 16,
        "training.head_lr": HEAD_LR,
        "training.backbone_lr": BACKBONE_LR,
        "training.scheduler": "none",
        "training.warmup_epochs": 0.0,
        # These tests feed plain DataLoaders: there is no training split to count classes in.
        "loss.use_class_weights": "false",
    }
    base.update(overrides)
    return compose_config("quick_test", [f"{k}={v}" for k, v in base.items()])


def loader(num_batches: int = 3, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        mask = torch.ones(2, 2, dtype=torch.bool)
        mask[0, 1] = False  # one padded view, as in real batches
        offence_severity = torch.randint(0, 4, (2,), generator=g)
        batches.append(
            {
                "video": torch.randn(2, 2, 3, 4, 16, 16, generator=g),
                "view_mask": mask,
                "offence_severity": offence_severity,
                "severity_match": offence_severity,
                "action": torch.randint(0, 8, (2,), generator=g),
                "faults": [],
                "dropped_action_ids": [],
            }
        )
    return DataLoader(batches, batch_size=None)


class TinyModule(L.LightningModule):
    """The parts of MultiViewFoulModule the callback relies on (``.net``, the real optimiser and
    scheduler), plus a scripted validation metric and a record of every training step."""

    def __init__(self, cfg: DictConfig, monitor_values: list[float] | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.cfg = cfg
        self.net = MultiViewNet("tiny", shared_dim=16)
        self.monitor_values = monitor_values
        self.steps: list[dict[str, Any]] = []  # one record per training step

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        opt = self.optimizers().optimizer
        groups = {g["name"]: g for g in opt.param_groups}
        sched = self.lr_schedulers()
        self.steps.append(
            {
                "epoch": self.current_epoch,
                "batch": batch_idx,
                "requires_grad": [
                    all(p.requires_grad for p in b.parameters()) for b in self.net.backbone.blocks()
                ],
                "any_grad": [
                    any(p.requires_grad for p in b.parameters()) for b in self.net.backbone.blocks()
                ],
                "backbone_ids": {id(p) for p in groups["backbone"]["params"]},
                "lr": {name: float(g["lr"]) for name, g in groups.items()},
                "initial_lr": groups["backbone"].get("initial_lr"),
                "base_lrs": list(getattr(sched, "base_lrs", []) or []) if sched is not None else [],
                "last_epoch": getattr(sched, "last_epoch", None) if sched is not None else None,
            }
        )
        out = self.net(batch["video"], batch["view_mask"])
        return F.cross_entropy(
            out["offence_severity"], batch["offence_severity"]
        ) + F.cross_entropy(out["action"], batch["action"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.net(batch["video"], batch["view_mask"])

    def on_validation_epoch_end(self) -> None:
        if self.monitor_values is not None and not self.trainer.sanity_checking:
            self.log(self.cfg.experiment.monitor, float(self.monitor_values[self.current_epoch]))

    def configure_optimizers(self) -> Any:  # exactly as MultiViewFoulModule
        return configure_optimization(
            self.cfg, self.net, int(self.trainer.estimated_stepping_batches)
        )

    def first_step(self, epoch: int) -> dict[str, Any]:
        return next(s for s in self.steps if s["epoch"] == epoch)


class TrainAfterValModule(TinyModule):
    """A module that puts the whole model back in train mode after validation (Lightning's hook
    default when overridden), with validation in the middle of each epoch: the worst case for
    frozen BatchNorm."""

    def on_validation_model_train(self) -> None:
        self.trainer.model.train()


class BNProbe(Callback):
    """Records, for every BatchNorm forward during training batches, (epoch, block, bn.training),
    and the BN buffers of each block at fit start and at every train epoch end."""

    def __init__(self) -> None:
        self.modes: list[tuple[int, int, bool]] = []
        self.stats: dict[str, list[dict[str, torch.Tensor]]] = {}
        self._in_train_batch = False
        self._epoch = 0

    @staticmethod
    def _bns(pl_module):
        return [
            [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm3d)]
            for block in pl_module.net.backbone.blocks()
        ]

    def _snapshot(self, pl_module) -> list[dict[str, torch.Tensor]]:
        return [
            {k: v.detach().clone() for k, v in bns[0].state_dict().items()}
            for bns in self._bns(pl_module)
        ]

    def on_fit_start(self, trainer, pl_module) -> None:
        self.stats["start"] = self._snapshot(pl_module)
        for i, bns in enumerate(self._bns(pl_module)):
            for bn in bns:
                bn.register_forward_pre_hook(
                    lambda m, _inp, i=i: (
                        self.modes.append((self._epoch, i, m.training))
                        if self._in_train_batch
                        else None
                    )
                )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._in_train_batch, self._epoch = True, trainer.current_epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._in_train_batch = False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.stats[f"epoch{trainer.current_epoch}"] = self._snapshot(pl_module)


def fit(
    module: L.LightningModule,
    callbacks: list[Callback],
    epochs: int,
    log_dir: Path | None = None,
    ckpt_path: str | None = None,
    train_batches: int = 3,
    **trainer_kwargs: Any,
) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=CSVLogger(str(log_dir), name="", version="") if log_dir is not None else False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        callbacks=callbacks,
        **trainer_kwargs,
    )
    trainer.fit(
        module,
        train_dataloaders=loader(train_batches),
        val_dataloaders=loader(1, seed=1),
        ckpt_path=ckpt_path,
    )
    return trainer


def epoch_metrics(log_dir: Path, name: str) -> dict[int, float]:
    """The per-epoch values of metric ``name`` in a CSVLogger's metrics.csv."""
    with open(log_dir / "metrics.csv", newline="") as f:
        return {int(row["epoch"]): float(row[name]) for row in csv.DictReader(f) if row.get(name)}


def top_down(trainable: int) -> list[bool]:
    return [i >= NUM_BLOCKS - trainable for i in range(NUM_BLOCKS)]


# --- progressive -----------------------------------------------------------------------------------


def test_progressive_unfreezes_top_down_at_schedule_epochs_with_all_backbone_params_in_their_group(
    tmp_path,
):
    cfg = make_cfg(**{"freezing.enable_backbone_lr_boost": False})
    module = TinyModule(cfg)
    stem_before = [p.detach().clone() for p in module.net.backbone.blocks()[0].parameters()]
    callback = build_freezing_callback(cfg)
    assert isinstance(callback, GradualUnfreezing) and callback.strategy == "progressive"
    fit(module, [callback], epochs=4, log_dir=tmp_path)

    backbone_ids = {id(p) for p in module.net.backbone_parameters()}
    block_sizes = [sum(p.numel() for p in b.parameters()) for b in module.net.backbone.blocks()]
    fractions = epoch_metrics(tmp_path, TRAINABLE_FRACTION_METRIC)
    blocks_logged = epoch_metrics(tmp_path, TRAINABLE_BLOCKS_METRIC)
    # schedule [1, 2, 3], one block each: 0, 1, 2, 3 trainable blocks from the top.
    for epoch, trainable in enumerate([0, 1, 2, 3]):
        for step in (s for s in module.steps if s["epoch"] == epoch):
            assert step["requires_grad"] == top_down(trainable), (epoch, step["requires_grad"])
            assert step["any_grad"] == top_down(trainable)  # no half-frozen block
            # every backbone parameter sits in the "backbone" group, frozen or not, at its LR
            assert step["backbone_ids"] == backbone_ids
            assert step["lr"] == {"head": HEAD_LR, "backbone": BACKBONE_LR}
        assert blocks_logged[epoch] == trainable
        assert fractions[epoch] == pytest.approx(
            sum(block_sizes[NUM_BLOCKS - trainable :]) / sum(block_sizes)
        )
    assert fractions[0] == 0.0
    # the stem never unfroze (3 steps of one block): its weights are bit-identical
    assert all(
        torch.equal(a, b) for a, b in zip(stem_before, module.net.backbone.blocks()[0].parameters())
    )


@pytest.mark.parametrize("module_cls", [TinyModule, TrainAfterValModule, MultiViewFoulModule])
def test_frozen_batchnorm_stays_in_eval_mode_and_its_running_stats_do_not_move(module_cls):
    cfg = make_cfg(**{"freezing.enable_backbone_lr_boost": False})
    if module_cls is MultiViewFoulModule:
        module = MultiViewFoulModule(OmegaConf.to_container(cfg, resolve=True))
    else:
        module = module_cls(cfg)
    probe = BNProbe()
    # 4 batches with validation every 2: a validation run in the middle of every epoch.
    fit(
        module,
        [build_freezing_callback(cfg), probe],
        epochs=3,
        train_batches=4,
        val_check_interval=2,
    )

    # Epoch e trains blocks >= 4 - e (schedule [1, 2, 3]): every BN forward during training saw
    # train mode exactly in trainable blocks, eval in frozen ones, before and after validation.
    assert len(probe.modes) == 3 * 4 * NUM_BLOCKS
    for epoch, block, training in probe.modes:
        assert training == (block >= NUM_BLOCKS - epoch), (epoch, block, training)

    start, end = probe.stats["start"], probe.stats["epoch2"]
    for block in (0, 1):  # frozen through all 3 epochs: bit-identical running stats
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(start[block][key], end[block][key]), (block, key)
    # block 3 trains from epoch 1, block 2 from epoch 2: their statistics moved
    for block, since in ((3, 1), (2, 2)):
        before = probe.stats[f"epoch{since - 1}"][block]
        assert not torch.equal(before["running_mean"], end[block]["running_mean"])
        assert int(end[block]["num_batches_tracked"]) > int(before["num_batches_tracked"])
    # and block 3 did not move while it was still frozen (epoch 0)
    assert torch.equal(start[3]["running_var"], probe.stats["epoch0"][3]["running_var"])


# --- the LR boost ----------------------------------------------------------------------------------


def test_boost_fires_once_when_half_the_blocks_train_and_scheduler_none_keeps_it(tmp_path, caplog):
    cfg = make_cfg()
    module = TinyModule(cfg)
    callback = build_freezing_callback(cfg)
    with caplog.at_level(logging.INFO, logger="mvfoul.training.freezing"):
        fit(module, [callback], epochs=5, log_dir=tmp_path)

    backbone_lr = [module.first_step(e)["lr"]["backbone"] for e in range(5)]
    head_lr = [module.first_step(e)["lr"]["head"] for e in range(5)]
    # schedule [1,2,3] over 4 blocks: half (2) trainable at epoch 2 -> 1e-3 x 0.6 from then on
    assert backbone_lr == pytest.approx([1e-4, 1e-4, 6e-4, 6e-4, 6e-4], rel=1e-12)
    assert backbone_lr[2] == BOOSTED
    assert head_lr == [HEAD_LR] * 5
    assert epoch_metrics(tmp_path, BOOST_METRIC) == {0: 0.0, 1: 0.0, 2: 1.0, 3: 0.0, 4: 0.0}
    boost_lines = [r for r in caplog.records if "backbone LR boost" in r.getMessage()]
    assert len(boost_lines) == 1 and boost_lines[0].levelno == logging.INFO
    assert "epoch 2" in boost_lines[0].getMessage()
    assert callback.boosted


def test_boost_with_cosine_scales_the_base_and_the_schedule_continues_from_it():
    cfg = make_cfg(**{"training.scheduler": "cosine", "training.min_lr": 1e-6})
    module = TinyModule(cfg)
    trainer = fit(module, [build_freezing_callback(cfg)], epochs=4)
    scheduler = trainer.lr_scheduler_configs[0].scheduler

    assert len(module.steps) == 12
    for step in module.steps:
        s = step["last_epoch"]  # the per-step schedule has stepped once per optimiser step
        assert s == step["epoch"] * 3 + step["batch"]
        base = BACKBONE_LR if step["epoch"] < 2 else BOOSTED
        assert step["base_lrs"] == pytest.approx([HEAD_LR, base], rel=1e-12)
        assert step["lr"]["backbone"] == pytest.approx(scheduler.lr_at(s, base), rel=1e-12)
        assert step["lr"]["head"] == pytest.approx(scheduler.lr_at(s, HEAD_LR), rel=1e-12)
        if step["epoch"] >= 2:
            assert step["initial_lr"] == BOOSTED
    # The boost lands mid-decay: the cosine is already below its base at step 6 ...
    at_boost = module.first_step(2)
    assert at_boost["lr"]["backbone"] < BOOSTED
    assert at_boost["lr"]["backbone"] == pytest.approx(scheduler.lr_at(6, BOOSTED), rel=1e-12)
    assert scheduler.base_lrs == pytest.approx([HEAD_LR, BOOSTED], rel=1e-12)
    # ... and both groups still end at the same absolute floor.
    assert scheduler.lr_at(scheduler.total_steps, BOOSTED) == pytest.approx(1e-6)
    assert scheduler.lr_at(scheduler.total_steps, HEAD_LR) == pytest.approx(1e-6)


@pytest.mark.parametrize(
    "scheduler, overrides, expected_backbone, expected_head",
    [
        # StepLR, halving every epoch: 1e-4 x 0.5^e, then 6e-4 x 0.5^e from the boost at epoch 2
        (
            "step",
            {"training.step_size": 1, "training.gamma": 0.5},
            [1e-4, 5e-5, 1.5e-4, 7.5e-5],
            [1e-3, 5e-4, 2.5e-4, 1.25e-4],
        ),
        # ReduceLROnPlateau on a flat metric (patience 0): halves after epochs 1 and 2;
        # at epoch 2 the backbone is at 0.5 x its base -> 0.5 x 6e-4, then halved again
        (
            "plateau",
            {"training.plateau_patience": 0, "training.plateau_factor": 0.5},
            [1e-4, 1e-4, 3e-4, 1.5e-4],
            [1e-3, 1e-3, 5e-4, 2.5e-4],
        ),
    ],
)
def test_boost_with_epoch_schedulers_keeps_the_multiplier_and_later_steps_follow(
    scheduler, overrides, expected_backbone, expected_head
):
    cfg = make_cfg(**{"training.scheduler": scheduler, **overrides})
    module = TinyModule(cfg, monitor_values=[50.0] * 4)
    trainer = fit(module, [build_freezing_callback(cfg)], epochs=4)
    assert [module.first_step(e)["lr"]["backbone"] for e in range(4)] == pytest.approx(
        expected_backbone, rel=1e-12
    )
    assert [module.first_step(e)["lr"]["head"] for e in range(4)] == pytest.approx(
        expected_head, rel=1e-12
    )
    sched = trainer.lr_scheduler_configs[0].scheduler
    if scheduler == "step":
        assert sched.base_lrs == pytest.approx([HEAD_LR, BOOSTED], rel=1e-12)
    assert trainer.optimizers[0].param_groups[1]["initial_lr"] == pytest.approx(BOOSTED, rel=1e-12)


# --- adaptive --------------------------------------------------------------------------------------


def test_adaptive_unfreezes_after_patience_epochs_without_improvement_in_a_real_run(tmp_path):
    cfg = make_cfg(
        **{
            "freezing.freezing_strategy": "adaptive",
            "freezing.patience_epochs": 2,
            "freezing.min_improvement": 0.001,
            "experiment.monitor": "val/sev_acc",
            "experiment.mode": "max",
        }
    )
    # e0 best=50; e1 improves; e2 flat (1 bad); e3 +0.0005 < 0.001 (2 bad -> unfreeze for e4);
    # e4 flat (1 bad); e5 improves; e6 flat (1 bad)
    values = [50.0, 60.0, 60.0, 60.0005, 60.0, 70.0, 70.0]
    module = TinyModule(cfg, monitor_values=values)
    callback = build_freezing_callback(cfg)
    fit(module, [callback], epochs=7, log_dir=tmp_path, train_batches=1)
    trainable = [sum(module.first_step(e)["requires_grad"]) for e in range(7)]
    assert trainable == [0, 0, 0, 0, 1, 1, 1]
    assert module.first_step(4)["requires_grad"] == top_down(1)
    assert epoch_metrics(tmp_path, TRAINABLE_BLOCKS_METRIC) == {
        e: float(t) for e, t in enumerate(trainable)
    }
    state = callback.state_dict()
    assert {k: state[k] for k in ("unfrozen_blocks", "best", "bad_epochs", "boosted")} == {
        "unfrozen_blocks": 1,
        "best": 70.0,
        "bad_epochs": 1,
        "boosted": False,
    }


def _stub_trainer(
    metrics: dict[str, float], sanity: bool = False, world_size: int = 1, epoch: int = 0
) -> SimpleNamespace:
    return SimpleNamespace(
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        sanity_checking=sanity,
        is_global_zero=True,
        strategy=object(),
        world_size=world_size,
        current_epoch=epoch,
        optimizers=[],
        lr_scheduler_configs=[],
    )


def _attached(callback: GradualUnfreezing) -> GradualUnfreezing:
    """The callback after Trainer.setup on a tiny module (blocks known, backbone frozen)."""
    module = TinyModule(make_cfg())
    callback.setup(_stub_trainer({}), module, "fit")
    return callback


def test_adaptive_counts_bad_validation_epochs_with_a_stubbed_metric_and_resets_patience(caplog):
    cb = _attached(
        GradualUnfreezing(
            "adaptive",
            unfreeze_blocks=2,
            patience_epochs=3,
            min_improvement=0.5,
            monitor="val/loss",
            mode="min",
        )
    )
    seen = []
    for value in [2.0, 1.4, 1.2, 1.0, 1.3, 1.3, 0.99, 1.0, 0.9]:
        cb.on_validation_end(_stub_trainer({"val/loss": value}), None)
        seen.append((cb.unfrozen_blocks, cb.bad_epochs))
    # 2.0 best; 1.4 improves by 0.6; 1.2, 1.0 (gains 0.2, 0.4 < 0.5), 1.3 -> 3 bad: +2 blocks;
    # 1.3, 0.99 (0.41), 1.0 -> 3 bad again: +2 blocks (all 4); then nothing left to unfreeze
    assert seen == [(0, 0), (0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2), (4, 0), (4, 0)]
    # sanity-check validation and a missing metric change nothing (the latter warns once)
    cb2 = _attached(GradualUnfreezing("adaptive", patience_epochs=1))
    cb2.on_validation_end(_stub_trainer({"val/sev_acc": 1.0}, sanity=True), None)
    assert cb2.best is None
    with caplog.at_level(logging.WARNING, logger="mvfoul.training.freezing"):
        cb2.on_validation_end(_stub_trainer({"val/other": 1.0}), None)
        cb2.on_validation_end(_stub_trainer({"val/other": 1.0}), None)
    assert (cb2.best, cb2.bad_epochs, cb2.unfrozen_blocks) == (None, 0, 0)
    assert len([r for r in caplog.records if "val/sev_acc" in r.getMessage()]) == 1


def test_min_improvement_is_at_least_and_zero_means_strictly_better():
    cb = _attached(GradualUnfreezing("adaptive", patience_epochs=1, min_improvement=0.001))
    cb.observe(0.6)
    cb.observe(0.601)  # exactly min_improvement (0.601 - 0.6 < 0.001 in floats): still counts
    assert (cb.best, cb.unfrozen_blocks) == (0.601, 0)
    cb = _attached(GradualUnfreezing("adaptive", patience_epochs=1, min_improvement=0.0))
    cb.observe(0.6)
    cb.observe(0.6)  # equal is not better
    assert cb.unfrozen_blocks == 1


# --- strategy none, factory, resume, DDP ----------------------------------------------------------


def test_strategy_none_freezes_nothing_and_the_boost_fires_at_the_first_epoch():
    cfg = make_cfg(**{"freezing": "none", "freezing.enable_backbone_lr_boost": True})
    callback = build_freezing_callback(cfg)
    assert callback is not None and callback.strategy == "none"
    module = TinyModule(cfg)
    probe = BNProbe()
    fit(module, [callback, probe], epochs=2)
    assert all(s["requires_grad"] == [True] * NUM_BLOCKS for s in module.steps)
    assert all(training for _, _, training in probe.modes)
    assert [module.first_step(e)["lr"]["backbone"] for e in range(2)] == [BOOSTED, BOOSTED]


def test_factory_returns_none_only_when_there_is_nothing_to_do():
    assert build_freezing_callback(make_cfg(freezing="none")) is None  # none.yaml: boost off
    off = build_freezing_callback(make_cfg(**{"freezing.gradual_finetuning": False}))
    assert off is not None and off.strategy == "none" and off.enable_backbone_lr_boost
    cb = build_freezing_callback(
        make_cfg(
            **{
                "freezing.freezing_strategy": "adaptive",
                "freezing.unfreeze_blocks": 2,
                "freezing.patience_epochs": 3,
                "freezing.backbone_lr_ratio_after_half": 0.25,
                "training.head_lr": "null",
                "training.learning_rate": 0.002,
                "experiment.monitor": "val/loss",
                "experiment.mode": "min",
            }
        )
    )
    assert (cb.strategy, cb.unfreeze_blocks, cb.patience_epochs, cb.monitor, cb.mode) == (
        "adaptive",
        2,
        3,
        "val/loss",
        "min",
    )
    assert (cb.head_lr, cb.backbone_lr, cb.backbone_lr_ratio_after_half) == (
        0.002,
        BACKBONE_LR,
        0.25,
    )
    with pytest.raises(ValueError, match="freezing_strategy 'gradual'"):
        GradualUnfreezing("gradual")
    # Built directly (no validate_config), the schema's choices and ranges still hold.
    with pytest.raises(ValueError, match="mode 'maximum' is not one of min, max"):
        GradualUnfreezing("adaptive", mode="maximum")
    with pytest.raises(ValueError, match="patience_epochs must be >= 1, got 0"):
        GradualUnfreezing("adaptive", patience_epochs=0)


def test_state_dict_round_trip_keeps_adaptive_progress_and_boosted():
    cb = GradualUnfreezing("adaptive")
    cb.unfrozen_blocks, cb.best, cb.bad_epochs, cb.boosted = 2, 61.5, 1, True
    state = cb.state_dict()
    restored = GradualUnfreezing("adaptive")
    restored.load_state_dict(torch.load(_save(state), weights_only=True))
    assert (restored.unfrozen_blocks, restored.best, restored.bad_epochs, restored.boosted) == (
        2,
        61.5,
        1,
        True,
    )
    # a checkpoint from before this callback had state: defaults
    fresh = GradualUnfreezing("adaptive")
    fresh.load_state_dict({})
    assert (fresh.unfrozen_blocks, fresh.best, fresh.bad_epochs, fresh.boosted) == (
        0,
        None,
        0,
        False,
    )


def _save(obj: Any) -> Any:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_resume_from_a_checkpoint_continues_the_schedule_without_boosting_again(tmp_path, caplog):
    cfg = make_cfg()
    first = TinyModule(cfg)
    trainer = fit(first, [build_freezing_callback(cfg)], epochs=3)  # boost fired at epoch 2
    ckpt = tmp_path / "after3.ckpt"
    trainer.save_checkpoint(ckpt)

    resumed = TinyModule(cfg)
    callback = build_freezing_callback(cfg)
    with caplog.at_level(logging.INFO, logger="mvfoul.training.freezing"):
        fit(resumed, [callback], epochs=5, log_dir=tmp_path / "logs", ckpt_path=str(ckpt))
    assert sorted({s["epoch"] for s in resumed.steps}) == [3, 4]
    assert callback.boosted
    assert not [r for r in caplog.records if "backbone LR boost" in r.getMessage()]
    assert epoch_metrics(tmp_path / "logs", BOOST_METRIC) == {3: 0.0, 4: 0.0}
    for epoch in (3, 4):
        step = resumed.first_step(epoch)
        assert step["requires_grad"] == top_down(3)
        assert step["lr"] == {"head": HEAD_LR, "backbone": pytest.approx(BOOSTED, rel=1e-12)}


def test_under_ddp_frozen_blocks_keep_requires_grad_and_lose_their_gradients_before_the_step():
    """Every parameter stays in DDP's all-reduce (requires_grad never flips); the frozen blocks'
    gradients are dropped just before the optimiser step, and their BatchNorm is in eval mode."""
    module = TinyModule(make_cfg())
    logged: dict[str, float] = {}
    module.log_dict = lambda metrics, **_: logged.update(metrics)  # no Trainer attached
    cb = GradualUnfreezing("progressive", unfreeze_schedule=[1], enable_backbone_lr_boost=False)
    cb.setup(_stub_trainer({}, world_size=2), module, "fit")
    module.train()
    cb.on_train_epoch_start(_stub_trainer({}, world_size=2, epoch=1), module)  # top block trains
    blocks = module.net.backbone.blocks()
    assert all(p.requires_grad for p in module.parameters())
    assert logged[TRAINABLE_BLOCKS_METRIC] == 1.0
    bn_modes = [
        [m.training for m in b.modules() if isinstance(m, torch.nn.BatchNorm3d)] for b in blocks
    ]
    assert bn_modes == [[False], [False], [False], [True]]

    batch = next(iter(loader(1)))
    out = module.net(batch["video"], batch["view_mask"])
    loss = F.cross_entropy(out["action"], batch["action"])
    (loss + F.cross_entropy(out["offence_severity"], batch["offence_severity"])).backward()
    cb.on_before_optimizer_step(None, module, None)
    assert [all(p.grad is None for p in b.parameters()) for b in blocks] == [True] * 3 + [False]
    assert all(p.grad is not None for p in module.net.head_parameters())


def test_lr_boost_finds_the_backbone_group_of_an_optimizer_built_elsewhere():
    """Unnamed groups: the boost finds the group holding the backbone, takes the other group's LR
    as the head's, and with no scheduler keeps the multiplier 1."""
    net = MultiViewNet("tiny", shared_dim=16)
    head, backbone = list(net.head_parameters()), list(net.backbone.parameters())
    optimizer = torch.optim.SGD([{"params": head, "lr": 0.01}, {"params": backbone, "lr": 0.001}])
    boost = boost_backbone_lr(optimizer, [], backbone, ratio=0.5)
    assert boost is not None and optimizer.param_groups[1]["lr"] == pytest.approx(0.005)
    assert optimizer.param_groups[1]["initial_lr"] == pytest.approx(0.005)
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert str(boost) == (
        "base LR 0.001 -> 0.005 (head LR x 0.5), current LR 0.001 -> 0.005 (schedule multiplier 1)"
    )
    # an optimiser without the backbone's parameters: nothing to boost
    head_only = torch.optim.SGD(head, lr=0.01)
    assert boost_backbone_lr(head_only, [], backbone, ratio=0.5) is None
