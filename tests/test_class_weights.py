"""Class weights, weighted losses, and the automatic label-smoothing rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import compose_config
from mvfoul.errors import ConfigError
from mvfoul.losses import (
    MultiTaskLoss,
    class_counts,
    class_weights,
    focal_loss,
    resolve_label_smoothing,
    uses_class_weights,
)
from mvfoul.rules import validate_config, with_schema

# The real training split's action counts (SoccerNet-MVFoul), in ACTION_CLASSES order:
# Tackling, Standing tackling, High leg, Holding, Pushing, Elbowing, Challenge, Dive.
REAL_ACTION_COUNTS = torch.tensor([448, 1264, 103, 361, 88, 178, 383, 28])


def test_effective_number_weights_equal_the_formula():
    beta = 0.99
    weights = class_weights(REAL_ACTION_COUNTS, "effective_num", beta)
    n = REAL_ACTION_COUNTS.double()
    raw = (1 - beta) / (1 - beta**n)
    expected = raw / raw.mean()
    assert torch.allclose(weights.double(), expected, rtol=1e-6)
    assert weights.mean().item() == pytest.approx(1.0, abs=1e-6)
    # Rarest class weighs most; the effective number saturates for big classes.
    assert weights.argmax().item() == 7 and weights.argmin().item() == 1


def test_inverse_frequency_and_balanced_weights():
    inverse = class_weights(REAL_ACTION_COUNTS, "inverse_freq")
    expected = (1 / REAL_ACTION_COUNTS.double()) / (1 / REAL_ACTION_COUNTS.double()).mean()
    assert torch.allclose(inverse.double(), expected, rtol=1e-6)
    # scikit-learn's "balanced" N / (K n_c) is proportional to 1 / n_c: same after normalisation.
    assert torch.allclose(class_weights(REAL_ACTION_COUNTS, "balanced"), inverse, rtol=1e-6)


def test_beta_zero_gives_uniform_weights_and_absent_classes_weigh_one():
    assert torch.allclose(class_weights(REAL_ACTION_COUNTS, "effective_num", 0.0), torch.ones(8))
    weights = class_weights(torch.tensor([10, 0, 30]), "inverse_freq")
    assert weights[1].item() == 1.0
    assert weights[[0, 2]].mean().item() == pytest.approx(1.0)
    assert weights[0].item() == pytest.approx(3 * weights[2].item())


def test_class_counts_from_labels():
    assert class_counts([0, 2, 2, 3, -1], 4).tolist() == [1, 0, 2, 1]  # -1: unlabelled, ignored


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_weighted_focal_loss_at_gamma_zero_equals_weighted_cross_entropy(smoothing):
    torch.manual_seed(0)
    logits, target = torch.randn(16, 8), torch.randint(0, 8, (16,))
    weight = class_weights(REAL_ACTION_COUNTS, "effective_num")
    expected = F.cross_entropy(
        logits, target, weight=weight, label_smoothing=smoothing, reduction="none"
    ).mean()
    got = focal_loss(logits, target, gamma=0.0, label_smoothing=smoothing, weight=weight)
    assert torch.allclose(got, expected, atol=1e-6)


def test_class_weights_scale_each_sample_by_its_class():
    loss = MultiTaskLoss("ce")
    logits = {"offence_severity": torch.zeros(2, 4), "action": torch.zeros(2, 8)}
    targets = {"offence_severity": torch.tensor([0, 3]), "action": torch.tensor([0, 0])}
    _, before = loss(logits, targets)
    loss.set_class_weights(
        {"offence_severity": torch.tensor([0.5, 1.0, 1.0, 1.5]), "action": torch.ones(8)}
    )
    _, after = loss(logits, targets)
    # Uniform logits: every sample's CE is log(4); weights 0.5 and 1.5 average to 1.
    assert after["offence_severity"].item() == pytest.approx(before["offence_severity"].item())
    targets["offence_severity"] = torch.tensor([3, 3])
    _, rare = loss(logits, targets)
    assert rare["offence_severity"].item() == pytest.approx(1.5 * before["offence_severity"].item())
    assert "offence_severity_class_weights" in loss.state_dict()  # checkpoints keep them


# --- label smoothing rule ------------------------------------------------------------------


def cfg(*overrides):
    return compose_config("quick_test", overrides)


ALL_ON = [
    "sampling=progressive",
    "sampling.oversample_factor=2.0",
    "loss.use_class_weights=true",
    "loss.label_smoothing=0.1",
]


def test_label_smoothing_is_switched_off_when_oversampling_and_class_weights_are_both_on():
    c = cfg(*ALL_ON)
    decision = resolve_label_smoothing(c.loss, c.sampling)
    assert (decision.configured, decision.effective) == (0.1, 0.0)
    assert "loss.auto_disable_label_smoothing=false" in decision.reason


@pytest.mark.parametrize(
    "change",
    [
        "sampling=none",  # no balanced sampler
        "sampling.oversample_factor=1.0",  # sampler on but no oversampling
        "loss.use_class_weights=false",  # no class weights
        "loss.auto_disable_label_smoothing=false",  # the user keeps it
    ],
)
def test_label_smoothing_is_kept_otherwise(change):
    c = cfg(*ALL_ON, change)
    decision = resolve_label_smoothing(c.loss, c.sampling)
    assert decision.effective == 0.1 and decision.reason is None


def test_focal_alpha_class_weights_counts_as_class_weights():
    c = cfg(
        *ALL_ON,
        "loss.use_class_weights=false",
        "loss=focal",
        "loss.focal_alpha=class_weights",
        "loss.label_smoothing=0.1",
    )
    assert uses_class_weights(c.loss)
    assert resolve_label_smoothing(c.loss, c.sampling).effective == 0.0
    validate_config(with_schema(c))


def test_focal_alpha_accepts_null_a_number_or_class_weights_only():
    for good in ("null", "0.25", "class_weights"):
        validate_config(with_schema(cfg(f"loss.focal_alpha={good}")))
    for bad in ("1.5", "weights", "0"):
        with pytest.raises(ConfigError, match="loss.focal_alpha"):
            validate_config(with_schema(cfg(f"loss.focal_alpha={bad}")))
