"""Class-balanced sampling with an optional progressive ramp (the ``sampling`` config group).

Trained on the imbalanced split as it is (27 red cards vs 1402 ``No card``), a model collapses to
the majority classes. The draw moves from the natural distribution ``p_c = n_c / N`` to a capped
balanced target ``q_c = min(f * p_c, lam)``, ``sum q = 1``: uniform, but no class above
``f = oversample_factor`` times its natural frequency (oversampling 27 red cards 40 times over
mostly teaches 27 clips). Each class is drawn a fixed ``floor`` or ``ceil`` of its share, so the
cap holds in every epoch, not only on average (a multinomial draw went to ~3x in half the epochs).
Everything comes from ``(seed, epoch)`` alone, so every DDP rank, rerun and resumed run draws the
same; each :class:`Draw` carries the seed of its views and augmentation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
from omegaconf import DictConfig
from torch.utils.data import Sampler

from mvfoul.labels import ACTION_CLASSES, OFFENCE_SEVERITY_CLASSES
from mvfoul.validate import Problems, cross_key_rule


class Draw(NamedTuple):
    """A sample, and the seed of its views and augmentation (from seed, epoch and position)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index; a Draw is never searched
    seed: int


def epoch_class_counts(
    distribution: np.ndarray, num_samples: int, caps: np.ndarray | None = None
) -> np.ndarray:
    """Draws per class in an epoch: ``floor`` or ``ceil`` of ``distribution * num_samples``,
    summing to ``num_samples``; the extra draws go first to classes still below ``caps``."""
    exact = np.asarray(distribution, dtype=np.float64) * num_samples
    # 1e-9 absorbs float noise: 53.9999999 draws is 54, not 53 plus a remainder of 0.9999999.
    counts = np.floor(exact + 1e-9).astype(np.int64)
    remainder = np.where(exact > 0, exact - counts, -np.inf)
    left = int(num_samples - counts.sum())
    if left > 0:
        below_cap = np.ones(counts.size, dtype=bool) if caps is None else counts < caps
        # Sort by: below its cap first, then the largest remainder, then the class index.
        order = np.lexsort((np.arange(counts.size), -remainder, ~below_cap))
        eligible = [c for c in order if np.isfinite(remainder[c])]
        counts[eligible[:left]] += 1
    return counts


def task_class_ids(
    task: str, offence_severity: Sequence[int] | np.ndarray, action: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Class id per sample for ``task``, and the class names; ``joint`` classes are the
    (severity, action) pairs present, named like ``"Offence + No card / Tackling"``."""
    severity = np.asarray(offence_severity, dtype=np.int64)
    act = np.asarray(action, dtype=np.int64)
    if task == "offence_severity":
        return severity, list(OFFENCE_SEVERITY_CLASSES)
    if task == "action":
        return act, list(ACTION_CLASSES)
    # "joint": the only other task sampling.balance_task allows (checked at startup).
    n = len(ACTION_CLASSES)
    present, ids = np.unique(severity * n + act, return_inverse=True)
    names = [f"{OFFENCE_SEVERITY_CLASSES[c // n]} / {ACTION_CLASSES[c % n]}" for c in present]
    return ids.astype(np.int64).reshape(-1), names


def natural_distribution(class_ids: np.ndarray, num_classes: int) -> np.ndarray:
    """``p_c = n_c / N``: how often each class occurs in the split."""
    return np.bincount(class_ids, minlength=num_classes) / class_ids.size


def capped_balanced_distribution(natural: np.ndarray, oversample_factor: float) -> np.ndarray:
    """The capped balanced target ``q_c = min(f * p_c, lam)``, ``sum q = 1`` (water-filling).

    ``g(lam) = sum_c min(f p_c, lam)`` is piecewise linear, with breakpoints at the sorted caps.
    On the first segment where ``g`` reaches 1, the ``j`` smallest classes are held at their cap
    and the other ``K - j`` share the rest: ``lam = (1 - sum of those j caps) / (K - j)``.
    """
    natural = np.asarray(natural, dtype=np.float64)
    present = natural > 0
    caps = np.sort(oversample_factor * natural[present])
    k = caps.size
    cumulative = np.cumsum(caps)
    # g at each breakpoint: the caps up to it plus the breakpoint value for every class above it.
    g_at_caps = cumulative + caps * (k - 1 - np.arange(k))
    j = min(int(np.searchsorted(g_at_caps, 1.0)), k - 1)  # first breakpoint with g >= 1
    held = cumulative[j - 1] if j > 0 else 0.0
    target = np.minimum(oversample_factor * natural, (1.0 - held) / (k - j))
    target[~present] = 0.0
    return target / target.sum()  # only float rounding is left to remove (~1e-16)


def ramp_fraction(epoch: int, start: int, end: int) -> float:
    """How far the ramp from natural (0) to the balanced target (1) is at ``epoch``: 0 before
    ``start``, 1 from ``end`` on, linear in between (``start == end`` is a step)."""
    if epoch < start:
        return 0.0
    if epoch >= end:
        return 1.0
    return (epoch - start) / (end - start)


def expected_distribution(
    sample_probs: np.ndarray, labels: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """Expected class frequencies of a draw with per-sample probabilities ``sample_probs`` (to
    log what balancing one task does to the other's mix)."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.bincount(labels, weights=sample_probs, minlength=num_classes)


class _EpochSampler(Sampler[Draw]):
    """Yields ``num_samples`` :class:`Draw` per epoch, chosen and seeded from ``(seed, epoch)``
    only. Call :meth:`set_epoch` before each epoch (Lightning does, also through its wrapper)."""

    num_samples: int
    seed: int
    epoch = 0

    def _indices(self, rng: np.random.Generator, epoch: int) -> np.ndarray:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[Draw]:
        # SeedSequence spreads (seed, epoch) well: neighbouring seeds or epochs don't correlate.
        order, samples = np.random.SeedSequence([self.seed % 2**64, self.epoch % 2**64]).spawn(2)
        indices = self._indices(np.random.default_rng(order), self.epoch)
        seeds = samples.generate_state(indices.size, dtype=np.uint64) & np.uint64(2**63 - 1)
        return map(Draw, indices.tolist(), seeds.tolist())


class ClassBalancedSampler(_EpochSampler):
    """Draws ``num_samples`` per epoch at that epoch's class mix, each class a fixed number of times."""

    def __init__(
        self,
        class_ids: Sequence[int] | np.ndarray,
        num_classes: int,
        oversample_factor: float = 2.0,
        progressive: bool = True,
        start_epoch: int = 0,
        end_epoch: int = 10,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        self.class_ids = np.asarray(class_ids, dtype=np.int64)
        self.natural = natural_distribution(self.class_ids, num_classes)
        self.target = capped_balanced_distribution(self.natural, oversample_factor)
        self.progressive = bool(progressive)
        self.start_epoch = int(start_epoch)
        self.end_epoch = int(end_epoch)
        self.num_samples = int(num_samples) if num_samples is not None else self.class_ids.size
        self.seed = int(seed)
        self._class_sizes = np.bincount(self.class_ids)[self.class_ids]  # each sample's n_c
        self._caps = np.floor(float(oversample_factor) * self.natural * self.num_samples + 1e-9)
        self._members = [np.flatnonzero(self.class_ids == c) for c in range(num_classes)]

    def balance_fraction(self, epoch: int | None = None) -> float:
        """0 = natural frequencies, 1 = the capped balanced target."""
        epoch = self.epoch if epoch is None else epoch
        return ramp_fraction(epoch, self.start_epoch, self.end_epoch) if self.progressive else 1.0

    def class_distribution(self, epoch: int | None = None) -> np.ndarray:
        """Expected class frequencies of the draw at ``epoch`` (default: the current one)."""
        a = self.balance_fraction(epoch)
        return (1.0 - a) * self.natural + a * self.target

    def sample_weights(self, epoch: int | None = None) -> np.ndarray:
        """Probability of drawing each sample at ``epoch``: ``q_c / n_c`` for its class ``c``."""
        return self.class_distribution(epoch)[self.class_ids] / self._class_sizes

    def class_counts(self, epoch: int | None = None) -> np.ndarray:
        """How many times each class is drawn at ``epoch``: fixed, see :func:`epoch_class_counts`."""
        return epoch_class_counts(self.class_distribution(epoch), self.num_samples, self._caps)

    def _indices(self, rng: np.random.Generator, epoch: int) -> np.ndarray:
        chosen = []
        for members, count in zip(self._members, self.class_counts(epoch)):
            if count == 0:
                continue
            # Whole permutations of the class, then part of one more.
            rounds, rest = divmod(int(count), members.size)
            chosen += [rng.permutation(members) for _ in range(rounds)]
            chosen.append(rng.permutation(members)[:rest])
        return rng.permutation(np.concatenate(chosen))


class EpochShuffleSampler(_EpochSampler):
    """Every sample once per epoch (``sampling.use_class_balanced_sampler=false``); unlike
    ``shuffle=True``, whose generator advances every epoch, a resumed run knows where it stands."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)

    def _indices(self, rng: np.random.Generator, epoch: int) -> np.ndarray:
        return rng.permutation(self.num_samples)


@cross_key_rule("sampling")
def check_progressive_ramp(cfg: DictConfig, p: Problems) -> None:
    sampling = cfg.sampling
    if sampling.progressive_end_epoch < sampling.progressive_start_epoch:
        p.add(
            "sampling.progressive_end_epoch",
            f"{sampling.progressive_end_epoch} is before sampling.progressive_start_epoch "
            f"({sampling.progressive_start_epoch})",
        )
