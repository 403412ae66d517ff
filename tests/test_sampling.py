"""Class-balanced sampling: the distributions, the ramp, and the sampler's draws.

Labels are sized like the real SoccerNet-MVFoul training split (raw counts):

* action: Tackling 448, Standing tackling 1264, High leg 103, Holding 361, Pushing 88,
  Elbowing 178, Challenge 383, Dive 28 (N = 2853);
* offence_severity: No offence 324, No card 1402, Yellow 1172, Red 27 (N = 2925).

The two published tables don't share a total, so the *joint* fixture is a hand-made
severity x action table whose column sums are exactly the action counts and whose row sums are
324 / 1330 / 1172 / 27 (No card reduced by 72 to match N = 2853), with 6 empty combinations
(e.g. no Dive is a yellow or red card, as in the real data).

Each class's count in an epoch is fixed (largest remainder of its expected share), so a draw's
class frequencies are within one draw of the expected ones; the checks on a draw keep a
statistical tolerance anyway (one epoch of n = 3000 draws; per class
``|observed - expected| <= 4 * sqrt(expected * (1 - expected) / n)``), which also holds for the
other task's classes, drawn at random within each balanced class. A class with expected
frequency 0 must never be drawn. Seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest

from mvfoul.data.sampling import (
    ClassBalancedSampler,
    Draw,
    EpochShuffleSampler,
    capped_balanced_distribution,
    epoch_class_counts,
    expected_distribution,
    natural_distribution,
    ramp_fraction,
    task_class_ids,
)
from mvfoul.labels import ACTION_CLASSES, OFFENCE_SEVERITY_CLASSES

try:  # imported here, not in the test, so the test's own time stays well under a second
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
except ImportError:  # pragma: no cover - lightning is a dependency of mvfoul
    DistributedSamplerWrapper = None

ACTION_COUNTS = [448, 1264, 103, 361, 88, 178, 383, 28]
SEVERITY_COUNTS = [324, 1402, 1172, 27]
# Rows: offence_severity classes; columns: ACTION_CLASSES order.
JOINT_COUNTS = np.array(
    [
        [40, 120, 10, 30, 20, 14, 90, 0],
        [150, 640, 30, 160, 50, 60, 212, 28],
        [245, 500, 55, 171, 18, 102, 81, 0],
        [13, 4, 8, 0, 0, 2, 0, 0],
    ]
)
DRAWS = 3000
SIGMAS = 4.0


def labels_from_counts(counts: list[int], seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)  # order must not matter


def joint_labels() -> tuple[np.ndarray, np.ndarray]:
    sev, act = np.nonzero(JOINT_COUNTS)
    reps = JOINT_COUNTS[sev, act]
    order = np.random.default_rng(1).permutation(int(reps.sum()))
    return np.repeat(sev, reps)[order], np.repeat(act, reps)[order]


def drawn_indices(sampler) -> np.ndarray:
    return np.fromiter((draw.index for draw in sampler), dtype=np.int64)


def observed(sampler: ClassBalancedSampler, labels: np.ndarray, num_classes: int) -> np.ndarray:
    indices = drawn_indices(sampler)
    return np.bincount(labels[indices], minlength=num_classes) / indices.size


def assert_draw_matches(observed_freq: np.ndarray, expected: np.ndarray, n: int = DRAWS) -> None:
    """Per class within SIGMAS binomial standard errors; zero-probability classes never drawn."""
    se = np.sqrt(expected * (1 - expected) / n)
    bad = np.abs(observed_freq - expected) > SIGMAS * se
    bad |= (expected == 0) & (observed_freq > 0)
    assert not bad.any(), (
        f"observed {observed_freq.round(4)} vs expected {expected.round(4)} (classes {np.nonzero(bad)[0]})"
    )


def water_filling_by_bisection(p: np.ndarray, f: float) -> np.ndarray:
    """An independent reference for the capped target: bisect lam in sum(min(f p, lam)) = 1."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.minimum(f * p, mid).sum() < 1 else (lo, mid)
    return np.minimum(f * p, hi)


def test_factor_one_is_the_natural_distribution() -> None:
    labels = labels_from_counts(ACTION_COUNTS)
    p = np.array(ACTION_COUNTS) / sum(ACTION_COUNTS)
    sampler = ClassBalancedSampler(
        labels, 8, oversample_factor=1.0, progressive=False, num_samples=DRAWS, seed=3
    )
    np.testing.assert_allclose(sampler.class_distribution(), p, rtol=0, atol=1e-12)
    assert_draw_matches(observed(sampler, labels, 8), p)


def test_before_the_ramp_starts_the_draw_is_natural() -> None:
    labels = labels_from_counts(SEVERITY_COUNTS)
    p = np.array(SEVERITY_COUNTS) / sum(SEVERITY_COUNTS)
    sampler = ClassBalancedSampler(
        labels, 4, 2.0, progressive=True, start_epoch=5, end_epoch=15, num_samples=DRAWS
    )
    for epoch in range(5):
        np.testing.assert_allclose(sampler.class_distribution(epoch), p, rtol=0, atol=1e-12)
    sampler.set_epoch(2)
    assert_draw_matches(observed(sampler, labels, 4), p)


def test_large_factor_draws_uniformly_over_the_classes_present() -> None:
    counts = ACTION_COUNTS[:-1] + [0]  # a split without any Dive
    labels = labels_from_counts(counts)
    sampler = ClassBalancedSampler(
        labels, 8, oversample_factor=1000.0, progressive=False, num_samples=DRAWS
    )
    expected = np.array([1 / 7] * 7 + [0.0])
    np.testing.assert_allclose(sampler.class_distribution(), expected, rtol=0, atol=1e-12)
    assert_draw_matches(observed(sampler, labels, 8), expected)  # Dive: expected 0, never drawn


def test_capped_target_for_severity_at_factor_two_matches_hand_computation() -> None:
    # 2p = 648, 2804, 2344, 54 (/2925). Uniform 1/4 exceeds the caps of No offence and Red card,
    # which are held at 2p; No card and Yellow share the rest: (2925 - 702) / 2 / 2925 each.
    labels = labels_from_counts(SEVERITY_COUNTS)
    p = np.array(SEVERITY_COUNTS) / 2925
    q = capped_balanced_distribution(p, 2.0)
    np.testing.assert_allclose(q, np.array([648, 1111.5, 1111.5, 54]) / 2925, rtol=0, atol=1e-12)
    assert abs(q.sum() - 1) <= 1e-12
    assert (q <= 2 * p + 1e-12).all()
    assert q[1] < p[1] and q[2] < p[2]  # the majority classes shrink ...
    assert q[3] > p[3] and q[0] > p[0]  # ... so the rare ones can grow, to at most 2x

    sampler = ClassBalancedSampler(labels, 4, 2.0, progressive=False, num_samples=DRAWS, seed=11)
    freq = observed(sampler, labels, 4)
    assert_draw_matches(freq, q)
    assert (freq <= 2 * p + SIGMAS * np.sqrt(q * (1 - q) / DRAWS)).all()


def test_capped_target_for_actions_at_factor_two_matches_hand_computation() -> None:
    # 2 n_c / 2853 is below 1/8 for High leg, Pushing, Dive and Elbowing (356/2853 = 0.1248):
    # they are held at 2p, and the other four share (2853 - 794) / 2853 equally.
    p = np.array(ACTION_COUNTS) / 2853
    q = capped_balanced_distribution(p, 2.0)
    lam = (2853 - 794) / 4 / 2853
    expected = np.array([lam, lam, 206 / 2853, lam, 176 / 2853, 356 / 2853, lam, 56 / 2853])
    np.testing.assert_allclose(q, expected, rtol=0, atol=1e-12)
    assert (
        q[ACTION_CLASSES.index("Standing tackling")] < p[ACTION_CLASSES.index("Standing tackling")]
    )


@pytest.mark.parametrize("factor", [1.0, 1.3, 2.0, 5.0, 37.0, 1e6])
def test_capped_target_equals_the_water_filling_formula(factor: float) -> None:
    rng = np.random.default_rng(int(factor * 10) % 1000)
    for counts in (ACTION_COUNTS, SEVERITY_COUNTS, list(rng.integers(0, 500, size=12))):
        p = np.array(counts, dtype=float) / sum(counts)
        q = capped_balanced_distribution(p, factor)
        np.testing.assert_allclose(q, water_filling_by_bisection(p, factor), rtol=0, atol=1e-12)
        assert abs(q.sum() - 1) <= 1e-12
        assert (q <= factor * p + 1e-12).all()
        assert (q[p == 0] == 0).all()


def test_ramp_fraction() -> None:
    assert [ramp_fraction(e, 2, 6) for e in range(9)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    assert [ramp_fraction(e, 3, 3) for e in range(6)] == [0, 0, 0, 1, 1, 1]  # a step at start


@pytest.mark.parametrize(("epoch", "a"), [(2, 0.0), (4, 0.5), (6, 1.0), (9, 1.0)])
def test_progressive_draw_follows_the_ramp(epoch: int, a: float) -> None:
    labels = labels_from_counts(ACTION_COUNTS)
    p = np.array(ACTION_COUNTS) / 2853
    q = capped_balanced_distribution(p, 3.0)
    sampler = ClassBalancedSampler(
        labels, 8, 3.0, progressive=True, start_epoch=2, end_epoch=6, num_samples=DRAWS
    )
    sampler.set_epoch(epoch)
    expected = (1 - a) * p + a * q
    np.testing.assert_allclose(sampler.class_distribution(), expected, rtol=0, atol=1e-12)
    assert_draw_matches(observed(sampler, labels, 8), expected)


def test_without_the_ramp_the_target_applies_from_epoch_zero() -> None:
    labels = labels_from_counts(SEVERITY_COUNTS)
    sampler = ClassBalancedSampler(labels, 4, 2.0, progressive=False, start_epoch=5, end_epoch=10)
    q = capped_balanced_distribution(natural_distribution(labels, 4), 2.0)
    for epoch in (0, 7, 20):
        np.testing.assert_array_equal(sampler.class_distribution(epoch), q)


def test_joint_classes_are_the_combinations_present() -> None:
    severity, action = joint_labels()
    ids, names = task_class_ids("joint", severity, action)
    present = list(zip(*np.nonzero(JOINT_COUNTS)))
    assert len(names) == len(present) == 26
    assert names[0] == "No offence / Tackling"
    assert "Offence + No card / Dive" in names
    assert "Offence + Red card / Dive" not in names and "Offence + Yellow card / Dive" not in names
    for cls, (s, a) in enumerate(
        present
    ):  # each class is exactly one combination, by name and members
        assert names[cls] == f"{OFFENCE_SEVERITY_CLASSES[s]} / {ACTION_CLASSES[a]}"
        members = ids == cls
        assert members.sum() == JOINT_COUNTS[s, a]
        assert (severity[members] == s).all() and (action[members] == a).all()

    sampler = ClassBalancedSampler(
        ids, len(names), oversample_factor=1000.0, progressive=False, num_samples=DRAWS
    )
    assert_draw_matches(observed(sampler, ids, len(names)), np.full(26, 1 / 26))
    drawn = drawn_indices(sampler)
    drawn_pairs = set(zip(severity[drawn].tolist(), action[drawn].tolist()))
    assert drawn_pairs == set((int(s), int(a)) for s, a in present)  # all present, none absent


def test_expected_distribution_of_the_other_task() -> None:
    severity, action = joint_labels()
    sampler = ClassBalancedSampler(severity, 4, 2.0, progressive=False, num_samples=DRAWS, seed=5)
    weights = sampler.sample_weights(0)
    assert abs(weights.sum() - 1) <= 1e-12
    np.testing.assert_allclose(
        expected_distribution(weights, severity, 4), sampler.class_distribution(0), atol=1e-12
    )
    expected_actions = expected_distribution(weights, action, 8)
    # By hand: each severity class spreads its target mass over its actions in proportion.
    by_hand = (
        sampler.class_distribution(0)[:, None] * JOINT_COUNTS / JOINT_COUNTS.sum(1, keepdims=True)
    ).sum(0)
    np.testing.assert_allclose(expected_actions, by_hand, rtol=0, atol=1e-12)
    assert_draw_matches(observed(sampler, action, 8), expected_actions)


def test_same_seed_and_epoch_give_the_same_draw_in_every_process() -> None:
    labels = labels_from_counts(ACTION_COUNTS)
    rank0 = ClassBalancedSampler(labels, 8, 2.0, num_samples=DRAWS, seed=42)
    rank1 = ClassBalancedSampler(labels.copy(), 8, 2.0, num_samples=DRAWS, seed=42)
    rank0.set_epoch(3)
    rank1.set_epoch(3)
    first = list(rank0)
    assert first == list(rank1) == list(rank0)  # also stable when iterated again
    rank0.set_epoch(4)
    assert list(rank0) != first
    other_seed = ClassBalancedSampler(labels, 8, 2.0, num_samples=DRAWS, seed=43)
    other_seed.set_epoch(3)
    assert list(other_seed) != first


def test_samples_per_epoch_sets_the_length_otherwise_the_dataset_size() -> None:
    labels = labels_from_counts(SEVERITY_COUNTS)
    fixed = ClassBalancedSampler(labels, 4, num_samples=1234)
    assert len(fixed) == len(list(fixed)) == 1234
    default = ClassBalancedSampler(labels, 4)
    assert len(default) == len(list(default)) == 2925
    assert all(0 <= draw.index < 2925 for draw in default)


@pytest.mark.skipif(DistributedSamplerWrapper is None, reason="lightning is not installed")
def test_lightning_distributed_wrapper_shards_one_shared_draw() -> None:
    """Two ranks through Lightning's wrapper get disjoint shards of the same epoch's draw."""
    labels = labels_from_counts(SEVERITY_COUNTS)
    shards = []
    for rank in (0, 1):
        wrapped = DistributedSamplerWrapper(
            ClassBalancedSampler(labels, 4, 2.0, num_samples=1000, seed=7),
            num_replicas=2,
            rank=rank,
            shuffle=False,
        )
        wrapped.set_epoch(5)  # forwarded to our sampler
        shards.append(list(wrapped))
    reference = ClassBalancedSampler(labels, 4, 2.0, num_samples=1000, seed=7)
    reference.set_epoch(5)
    full = list(reference)
    assert shards[0] == full[0::2] and shards[1] == full[1::2]


def test_bad_sampling_settings_are_config_errors_at_startup() -> None:
    from conftest import compose_config
    from mvfoul.errors import ConfigError
    from mvfoul.rules import validate_config, with_schema

    overrides = [
        "sampling.oversample_factor=0.5",
        "sampling.samples_per_epoch=0",
        "sampling.progressive_start_epoch=6",
        "sampling.progressive_end_epoch=2",
        "sampling.balance_task=both",
    ]
    with pytest.raises(ConfigError) as info:
        validate_config(with_schema(compose_config("quick_test", overrides)))
    assert info.value.problems == [
        "sampling.balance_task: 'both' is not one of offence_severity, action, joint",
        "sampling.oversample_factor: 0.5 is out of range: expected >= 1",
        "sampling.samples_per_epoch: 0 is out of range: expected >= 1 or null",
        "sampling.progressive_end_epoch: 2 is before sampling.progressive_start_epoch (6)",
    ]


# --- fixed counts per epoch ------------------------------------------------------------------


def test_the_cap_holds_in_every_epoch_not_only_on_average() -> None:
    """27 red cards of 2925 at oversample_factor 2: never more than 54 per epoch (a multinomial
    draw went up to ~3x its natural frequency in about half of the epochs)."""
    labels = labels_from_counts(SEVERITY_COUNTS)
    p = np.array(SEVERITY_COUNTS) / 2925
    for progressive in (False, True):
        sampler = ClassBalancedSampler(
            labels, 4, 2.0, progressive=progressive, start_epoch=0, end_epoch=20, seed=9
        )
        worst = 0.0
        for epoch in range(120):
            sampler.set_epoch(epoch)
            counts = np.bincount(labels[drawn_indices(sampler)], minlength=4)
            worst = max(worst, float((counts / counts.sum() / p).max()))
            assert counts[3] <= 54, (epoch, counts)
        assert worst <= 2.0 + 1e-12


def test_each_class_is_drawn_its_expected_count_within_one_and_the_epochs_agree() -> None:
    labels = labels_from_counts(ACTION_COUNTS)
    sampler = ClassBalancedSampler(
        labels, 8, 2.0, progressive=True, start_epoch=0, end_epoch=4, num_samples=1000, seed=1
    )
    for epoch in range(6):
        sampler.set_epoch(epoch)
        counts = np.bincount(labels[drawn_indices(sampler)], minlength=8)
        expected = sampler.class_distribution(epoch) * 1000
        assert counts.sum() == 1000
        assert (np.abs(counts - expected) < 1).all(), (epoch, counts, expected)
        np.testing.assert_array_equal(counts, sampler.class_counts(epoch))
    # Two epochs with the same distribution draw the same counts: no epoch-to-epoch variance.
    np.testing.assert_array_equal(sampler.class_counts(4), sampler.class_counts(5))


def test_within_a_class_every_member_is_drawn_evenly() -> None:
    labels = labels_from_counts([5, 40])  # 5 members oversampled to 2x: each drawn exactly twice
    sampler = ClassBalancedSampler(labels, 2, 2.0, progressive=False, seed=4)
    indices = drawn_indices(sampler)
    rare = np.flatnonzero(labels == 0)
    per_member = np.bincount(indices, minlength=labels.size)[rare]
    assert per_member.tolist() == [2, 2, 2, 2, 2]
    common = np.bincount(indices, minlength=labels.size)[labels == 1]
    assert set(common.tolist()) <= {0, 1}  # 35 of the 40 drawn once, none twice


def test_largest_remainder_rounding_respects_the_caps() -> None:
    counts = epoch_class_counts(np.array([0.5, 0.25, 0.25]), 10, caps=np.array([10, 2, 10]))
    assert counts.tolist() == [5, 2, 3]  # the capped class gives its remainder up
    assert epoch_class_counts(np.array([1 / 3, 1 / 3, 1 / 3, 0.0]), 10).tolist() in (
        [4, 3, 3, 0],
        [3, 4, 3, 0],
        [3, 3, 4, 0],
    )
    assert epoch_class_counts(np.array([0.0, 1.0]), 7).tolist() == [
        0,
        7,
    ]  # an absent class is never drawn


def test_every_draw_carries_its_own_seed_fixed_by_seed_epoch_and_position() -> None:
    labels = labels_from_counts(SEVERITY_COUNTS)
    sampler = ClassBalancedSampler(labels, 4, 2.0, num_samples=200, seed=3)
    sampler.set_epoch(2)
    draws = list(sampler)
    assert all(isinstance(d, Draw) for d in draws)
    assert len({d.seed for d in draws}) == len(draws)  # a seed per position
    again = ClassBalancedSampler(labels, 4, 2.0, num_samples=200, seed=3)
    again.set_epoch(2)
    assert list(again) == draws
    again.set_epoch(3)
    assert {d.seed for d in again}.isdisjoint({d.seed for d in draws})


def test_uniform_sampling_is_a_permutation_per_epoch_fixed_by_seed_and_epoch() -> None:
    sampler = EpochShuffleSampler(50, seed=7)
    first = [d.index for d in sampler]
    assert sorted(first) == list(range(50)) and len(sampler) == 50
    assert [d.index for d in sampler] == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(d.index for d in second) == list(range(50)) and [d.index for d in second] != first
    other = EpochShuffleSampler(50, seed=7)
    other.set_epoch(1)
    assert list(other) == second
