"""Losses, metrics, optimiser groups, schedules and hardware fallback."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import compose_config
from mvfoul.losses import MultiTaskLoss, focal_loss
from mvfoul.models.net import MultiViewNet
from mvfoul.training.metrics import MultiTaskScores, logged_metric_names
from mvfoul.training.module import (
    WarmupCosineLR,
    build_optimizer,
    build_scheduler,
    group_learning_rates,
)
from mvfoul.training.trainer import checkpoint_filename, resolve_hardware

# --- losses --------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_loss_at_gamma_zero_equals_cross_entropy(smoothing):
    torch.manual_seed(0)
    logits, target = torch.randn(32, 8), torch.randint(0, 8, (32,))
    expected = F.cross_entropy(logits, target, label_smoothing=smoothing)
    assert torch.allclose(
        focal_loss(logits, target, gamma=0.0, label_smoothing=smoothing), expected, atol=1e-6
    )


def test_focal_loss_discounts_easy_examples_more_than_hard_ones():
    target = torch.tensor([0])
    easy = torch.tensor([[6.0, 0.0, 0.0, 0.0]])  # p(correct) ~ 0.99
    hard = torch.tensor([[0.0, 2.0, 0.0, 0.0]])  # p(correct) ~ 0.1
    ratio_easy = focal_loss(easy, target, gamma=2.0) / F.cross_entropy(easy, target)
    ratio_hard = focal_loss(hard, target, gamma=2.0) / F.cross_entropy(hard, target)
    assert ratio_easy < 1e-3 < 0.5 < ratio_hard < 1.0


def test_focal_alpha_scales_the_loss():
    logits, target = torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert torch.allclose(focal_loss(logits, target, alpha=0.25), 0.25 * focal_loss(logits, target))


def test_task_weights_combine_the_two_heads():
    torch.manual_seed(1)
    logits = {"offence_severity": torch.randn(4, 4), "action": torch.randn(4, 8)}
    targets = {"offence_severity": torch.randint(0, 4, (4,)), "action": torch.randint(0, 8, (4,))}
    loss = MultiTaskLoss("ce", severity_weight=2.0, action_weight=0.5)
    total, parts = loss(logits, targets)
    assert torch.allclose(total, 2.0 * parts["offence_severity"] + 0.5 * parts["action"])
    assert torch.allclose(parts["action"], F.cross_entropy(logits["action"], targets["action"]))


# --- metrics -------------------------------------------------------------------------------


def _batch(sev, act, match=None):
    sev, act = torch.tensor(sev), torch.tensor(act)
    return {
        "offence_severity": sev,
        "action": act,
        "severity_match": sev if match is None else torch.tensor(match),
    }


def test_multitask_scores_log_the_documented_names_and_the_leaderboard():
    scores = MultiTaskScores()
    batch = _batch([0, 1, 2, 3], [0, 1, 1, 1])
    logits = {
        "offence_severity": F.one_hot(torch.tensor([0, 1, 2, 2]), 4).float(),  # 3/4 right, bacc 75
        "action": F.one_hot(torch.tensor([0, 1, 1, 0]), 8).float(),  # acc 75; 6 classes absent
    }
    scores.update(logits, batch)
    out = scores.scores("val")
    assert out["val/sev_acc"] == pytest.approx(75.0)
    assert out["val/sev_bacc"] == pytest.approx(75.0)
    assert out["val/action_acc"] == pytest.approx(75.0)
    # As officially: a class absent from the ground truth makes balanced accuracy NaN.
    assert math.isnan(out["val/action_bacc"]) and math.isnan(out["val/leaderboard"])
    assert set(out) <= set(logged_metric_names())


def test_multitask_scores_use_the_prediction_the_evaluator_accepts():
    """A Dive judged Offence + Yellow card (class 2) is only matched by a class-1 prediction;
    a ground truth whose offence string no prediction can match (-1) is never correct."""
    scores = MultiTaskScores()
    batch = _batch([2, 2, 0, 0], [7, 7, 0, 0], match=[1, 1, 0, -1])
    logits = {
        "offence_severity": F.one_hot(torch.tensor([1, 2, 0, 0]), 4).float(),
        "action": F.one_hot(torch.tensor([7, 7, 0, 0]), 8).float(),
    }
    scores.update(logits, batch)
    counts = scores.compute()
    assert counts["offence_severity_total"].tolist() == [2, 0, 2, 0]
    assert counts["offence_severity_correct"].tolist() == [1, 0, 1, 0]
    assert scores.scores("val")["val/sev_acc"] == pytest.approx(50.0)


# --- optimiser and schedules ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_net():
    return MultiViewNet("tiny", shared_dim=16)


def training_cfg(**overrides):
    cfg = compose_config("quick_test").training
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def test_head_and_backbone_groups_get_their_own_learning_rates(tiny_net):
    opt = build_optimizer(
        training_cfg(learning_rate=1e-4, head_lr=1e-3, backbone_lr=None), tiny_net
    )
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["head"]["lr"] == 1e-3 and groups["backbone"]["lr"] == 1e-4
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(
        p.numel() for p in tiny_net.parameters()
    )
    assert isinstance(build_optimizer(training_cfg(optimizer="sgd"), tiny_net), torch.optim.SGD)
    assert isinstance(build_optimizer(training_cfg(optimizer="adam"), tiny_net), torch.optim.Adam)
    assert isinstance(build_optimizer(training_cfg(optimizer="adamw"), tiny_net), torch.optim.AdamW)
    # Built without validate_config, an unknown name is an error, not silently another optimiser.
    with pytest.raises(ValueError, match="training.optimizer 'adamx' is not one of"):
        build_optimizer(training_cfg(optimizer="adamx"), tiny_net)
    assert group_learning_rates(
        training_cfg(learning_rate=3e-4, head_lr=None, backbone_lr=None)
    ) == {"head": 3e-4, "backbone": 3e-4}


def test_cosine_schedule_warms_up_then_decays_each_group_to_min_lr(tiny_net):
    cfg = training_cfg(
        max_epochs=10,
        warmup_epochs=2.0,
        min_lr=1e-6,
        learning_rate=1e-3,
        head_lr=1e-2,
        backbone_lr=None,
    )
    opt = build_optimizer(cfg, tiny_net)
    sched = build_scheduler(cfg, opt, total_steps=100, monitor="val/sev_acc", mode="max")
    assert sched["interval"] == "step"
    lrs = []
    for _ in range(100):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched["scheduler"].step()
    head = [lr[0] for lr in lrs]
    assert head[0] == pytest.approx(1e-2 / 20)  # warmup: 20 steps
    assert head[19] == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(head[19:], head[20:]))  # monotone decay after warmup
    assert head[-1] < 1e-5  # the last step is almost at the floor ...
    final = [g["lr"] for g in opt.param_groups]
    assert final == pytest.approx([1e-6, 1e-6])  # ... which both groups reach at the end


def test_warmup_cosine_endpoints():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = WarmupCosineLR(opt, warmup_steps=0, total_steps=10, min_lr=0.01)
    assert sched.lr_at(0, 0.1) == pytest.approx(0.1)
    assert sched.lr_at(10, 0.1) == pytest.approx(0.01)
    assert sched.lr_at(20, 0.1) == pytest.approx(0.01)  # stays at the floor past the end


def test_step_and_plateau_schedulers(tiny_net):
    cfg = training_cfg(scheduler="step", step_size=3, gamma=0.5)
    sched = build_scheduler(cfg, build_optimizer(cfg, tiny_net), 10, "val/sev_acc", "max")
    assert (
        isinstance(sched["scheduler"], torch.optim.lr_scheduler.StepLR)
        and sched["interval"] == "epoch"
    )
    cfg = training_cfg(scheduler="plateau")
    sched = build_scheduler(cfg, build_optimizer(cfg, tiny_net), 10, "val/leaderboard", "max")
    assert sched["monitor"] == "val/leaderboard"
    assert (
        build_scheduler(
            training_cfg(scheduler="none"), build_optimizer(cfg, tiny_net), 10, "x", "max"
        )
        is None
    )
    with pytest.raises(ValueError, match="training.scheduler 'cosin' is not one of"):
        build_scheduler(
            training_cfg(scheduler="cosin"), build_optimizer(cfg, tiny_net), 10, "x", "max"
        )


# --- trainer ------------------------------------------------------------------------------


def test_single_gpu_without_cuda_falls_back_to_cpu_fp32_with_one_warning(caplog):
    system = compose_config("config").system
    with caplog.at_level(logging.WARNING, logger="mvfoul.training.trainer"):
        hw = resolve_hardware(system, cuda_available=False)
    assert (hw.accelerator, hw.devices, hw.precision) == ("cpu", 1, "32-true")
    assert len(caplog.records) == 1 and "no CUDA device" in caplog.records[0].getMessage()
    gpu = resolve_hardware(system, cuda_available=True, gpu_count=1)
    assert (gpu.accelerator, gpu.devices, gpu.precision) == ("gpu", 1, "16-mixed")


def test_system_gpus_counts_gpus_or_cpu_processes():
    from mvfoul.errors import ConfigError

    ddp = resolve_hardware(
        compose_config("config", ["system=cpu_ddp"]).system, cuda_available=False
    )
    assert (ddp.accelerator, ddp.devices, ddp.strategy, ddp.precision) == (
        "cpu",
        2,
        "ddp",
        "32-true",
    )
    one = resolve_hardware(compose_config("config", ["system=cpu"]).system, cuda_available=False)
    assert (one.devices, one.strategy) == (1, "auto")
    multi = compose_config(
        "config", ["system=multi_gpu", "system.gpus=4", "system.num_nodes=2"]
    ).system
    hw = resolve_hardware(multi, cuda_available=True, gpu_count=4)
    assert (hw.accelerator, hw.devices, hw.num_nodes, hw.strategy) == ("gpu", 4, 2, "ddp")
    with pytest.raises(
        ConfigError, match="system.gpus: 8 GPUs per node asked for, this machine has 4"
    ):
        resolve_hardware(
            compose_config("config", ["system=multi_gpu"]).system, cuda_available=True, gpu_count=4
        )


def test_checkpoint_names_hold_no_slash():
    name = checkpoint_filename("val/sev_acc")
    assert "/" not in name.replace("{val/sev_acc", "")
    assert OmegaConf.create({"n": name}).n.startswith("epoch")


def test_loggers_write_at_most_every_few_seconds_and_in_full_when_flushed(tmp_path, monkeypatch):
    from mvfoul.training import loggers
    from mvfoul.training.summary import RunCSVLogger, read_metrics_csv

    clock = [100.0]
    monkeypatch.setattr(loggers.time, "monotonic", lambda: clock[0])
    logger = RunCSVLogger(tmp_path)
    metrics_csv = tmp_path / "csv" / "metrics.csv"
    logger.log_metrics({"train/loss_step": 1.0}, step=4)
    logger.save()  # the first save writes
    logger.log_metrics({"train/loss_step": 0.9}, step=9)
    logger.save()  # within the interval: kept in memory
    assert [r["step"] for r in read_metrics_csv(metrics_csv)] == ["4"]
    clock[0] += loggers.SAVE_INTERVAL_S
    logger.save()
    assert [r["step"] for r in read_metrics_csv(metrics_csv)] == ["4", "9"]
    logger.log_metrics({"train/loss_step": 0.8}, step=14)
    logger.flush()  # before last.ckpt and a requeue: always
    logger.log_metrics({"train/loss_step": 0.7}, step=19)
    logger.finalize("success")  # the end of the run: always
    assert [r["step"] for r in read_metrics_csv(metrics_csv)] == ["4", "9", "14", "19"]
