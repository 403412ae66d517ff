"""Class-balanced sampling with an optional progressive ramp (the ``sampling`` config group).

The SoccerNet-MVFoul training split is badly imbalanced (``Standing tackling`` 1264 actions vs
``Dive`` 28; ``Offence + No card`` 1402 vs ``Offence + Red card`` 27), and a model trained on
the natural distribution collapses to the majority classes. This module decides how often each
class is drawn per epoch; it holds no Lightning code, so it is unit-tested on plain arrays.

Definitions, for the classes of the balanced task (``sampling.balance_task``):

* **natural** distribution: ``p_c = n_c / N`` (how often a plain shuffle shows class ``c``);
* **capped balanced target**: no class is drawn more than ``oversample_factor`` times as often
  as its natural frequency: the target is uniform over the classes present, capped at
  ``oversample_factor x p_c``, and renormalised. The renormalisation is *water-filling*, so the
  cap still holds afterwards: ``q_c = min(f * p_c, lam)`` with ``lam`` chosen so that
  ``sum_c q_c = 1``. ``f = 1`` gives the natural distribution, a large ``f`` gives uniform;
  classes absent from the split get ``q_c = 0``. The cap exists because oversampling a class of
  27 actions 40 times over mostly teaches the network those 27 clips.
* **progressive ramp**: the distribution at ``epoch`` is ``(1 - a) * p + a * q`` with
  ``a = ramp_fraction(epoch, start, end)`` (0 before ``start``, 1 from ``end`` on, linear in
  between), so the network first sees the data as it is and is moved to the balanced draw
  gradually; without the ramp the target applies from epoch 0.

Tasks: ``offence_severity`` (4 classes), ``action`` (8) or ``joint``, where every
(offence_severity, action) combination present in the training split is one class, so both
tasks' rare classes are lifted at once.

**The draw of an epoch** is fixed per class, not left to chance: class ``c`` is drawn exactly
``floor`` or ``ceil`` of ``q_c * S`` times (``S`` = samples per epoch; largest-remainder rounding,
never above ``oversample_factor * p_c * S`` where the sizes allow it), and within its class each
member is drawn ``floor(count / n_c)`` or one more time (repeated permutations). The cap therefore
holds in every epoch, not only on average (a multinomial draw of 27 red cards at 2x went up to
~3x in half the epochs), and the epoch-to-epoch variance of what the network sees is minimal.
The concatenated draw is then shuffled.

Every choice comes from generators seeded by ``(seed, epoch)`` only: every DDP rank and every
rerun or resumed run builds the same list, and the distributed wrapper shards it. Each drawn
sample also carries its own seed (:class:`Draw`), from which the dataset draws its views and
augmentation, so these do not depend on the DataLoader worker, the rank or the process either.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from torch.utils.data import Sampler

from mvfoul.config import BALANCE_TASKS
from mvfoul.labels import ACTION_CLASSES, OFFENCE_SEVERITY_CLASSES

if TYPE_CHECKING:
    from mvfoul.data.annotations import Action


class Draw(NamedTuple):
    """One training draw: which sample, and the seed of its random choices (views, augmentation).

    The training samplers yield these instead of bare indices; the dataset seeds a generator with
    ``seed`` for this sample alone. The seed is a function of ``(seed, epoch, position in the
    epoch's draw)``, so a sample's augmentation does not depend on which DataLoader worker loads
    it, on the number of workers, on what a worker drew before, or on the process loading it (a
    resumed run, another DDP rank's share).
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index; a Draw is never searched
    seed: int


def _epoch_streams(seed: int, epoch: int) -> tuple[np.random.Generator, np.random.SeedSequence]:
    """The generator that decides an epoch's draw and order, and the seed sequence of its
    per-sample seeds: both from ``(seed, epoch)`` only. SeedSequence mixes them into well-spread
    state, so neighbouring seeds or epochs do not give correlated streams."""
    order, samples = np.random.SeedSequence([seed % 2**64, epoch % 2**64]).spawn(2)
    return np.random.default_rng(order), samples


def _draws(indices: np.ndarray, samples: np.random.SeedSequence) -> list[Draw]:
    seeds = samples.generate_state(max(1, indices.size), dtype=np.uint64) & np.uint64(2**63 - 1)
    return [Draw(int(i), int(s)) for i, s in zip(indices.tolist(), seeds.tolist())]


def epoch_class_counts(
    distribution: np.ndarray, num_samples: int, caps: np.ndarray | None = None
) -> np.ndarray:
    """How many draws each class gets in an epoch of ``num_samples``: ``floor`` or ``ceil`` of
    ``distribution * num_samples``, summing to ``num_samples`` (largest remainder).

    The extra draws go to the classes with the largest remainders among those still below
    ``caps`` (a count per class); only when the caps cannot hold ``num_samples`` together do the
    others get one too. A class with probability 0 is never drawn.
    """
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
        for c in eligible[:left]:
            counts[c] += 1
    return counts


def labels_of(actions: Sequence[Action]) -> tuple[np.ndarray, np.ndarray]:
    """The (offence_severity, action) class indices of labelled actions, as two int arrays."""
    unlabelled = [a.action_id for a in actions if a.labels is None]
    if unlabelled:
        raise ValueError(
            f"class-balanced sampling needs labelled actions; unlabelled: {unlabelled[:5]}"
        )
    severity = np.array([a.labels.offence_severity for a in actions], dtype=np.int64)  # type: ignore[union-attr]
    action = np.array([a.labels.action for a in actions], dtype=np.int64)  # type: ignore[union-attr]
    return severity, action


def task_class_ids(
    task: str, offence_severity: Sequence[int] | np.ndarray, action: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Class id per sample for ``task``, and the class names (``len(names)`` = class count).

    For ``joint`` the classes are the (offence_severity, action) combinations present in these
    labels, ordered by severity then action and named like ``"Offence + No card / Tackling"``;
    a combination absent from the split is not a class, so it can never be drawn.
    """
    severity = np.asarray(offence_severity, dtype=np.int64)
    act = np.asarray(action, dtype=np.int64)
    if severity.shape != act.shape or severity.ndim != 1:
        raise ValueError(
            "offence_severity and action labels must be 1-D and of equal length; "
            f"got shapes {severity.shape} and {act.shape}"
        )
    if task == "offence_severity":
        return severity, list(OFFENCE_SEVERITY_CLASSES)
    if task == "action":
        return act, list(ACTION_CLASSES)
    if task == "joint":
        _check_range(severity, len(OFFENCE_SEVERITY_CLASSES), "offence_severity")
        _check_range(act, len(ACTION_CLASSES), "action")
        flat = severity * len(ACTION_CLASSES) + act
        present, ids = np.unique(flat, return_inverse=True)  # sorted: severity first, then action
        names = [
            f"{OFFENCE_SEVERITY_CLASSES[c // len(ACTION_CLASSES)]} / {ACTION_CLASSES[c % len(ACTION_CLASSES)]}"
            for c in present
        ]
        return ids.astype(np.int64).reshape(-1), names
    raise ValueError(f"sampling.balance_task: {task!r} is not one of {', '.join(BALANCE_TASKS)}")


def natural_distribution(class_ids: np.ndarray, num_classes: int) -> np.ndarray:
    """``p_c = n_c / N``: how often each class occurs in the split."""
    class_ids = np.asarray(class_ids, dtype=np.int64)
    if class_ids.size == 0:
        raise ValueError(
            "class-balanced sampling needs at least one labelled sample; the label list is empty"
        )
    _check_range(class_ids, num_classes, "class id")
    return np.bincount(class_ids, minlength=num_classes) / class_ids.size


def capped_balanced_distribution(natural: np.ndarray, oversample_factor: float) -> np.ndarray:
    """The capped balanced target ``q_c = min(f * p_c, lam)``, ``sum q = 1`` (water-filling).

    ``g(lam) = sum_c min(f p_c, lam)`` is piecewise linear and non-decreasing, with breakpoints
    at the sorted caps ``a_(1) <= ... <= a_(K)`` and ``g(a_(K)) = f >= 1``. On the first segment
    where ``g`` reaches 1, the ``j`` smallest classes are held at their cap and the other
    ``K - j`` share the rest equally: ``lam = (1 - sum of those j caps) / (K - j)``.
    """
    _check_factor(oversample_factor)
    natural = np.asarray(natural, dtype=np.float64)
    present = natural > 0
    caps = np.sort(oversample_factor * natural[present])
    k = caps.size
    cumulative = np.cumsum(caps)
    # g at each breakpoint: the caps up to it plus the breakpoint value for every class above it.
    g_at_caps = cumulative + caps * (k - 1 - np.arange(k))
    j = min(int(np.searchsorted(g_at_caps, 1.0)), k - 1)  # first breakpoint with g >= 1
    held = cumulative[j - 1] if j > 0 else 0.0
    lam = (1.0 - held) / (k - j)
    target = np.minimum(oversample_factor * natural, lam)
    target[~present] = 0.0
    return target / target.sum()  # only float rounding is left to remove (~1e-16)


def ramp_fraction(epoch: int, start: int, end: int) -> float:
    """How far the ramp from natural (0) to the balanced target (1) is at ``epoch``.

    0 before ``start``, 1 at and after ``end``, linear in between; ``start == end`` is a step
    at ``start``.
    """
    if start > end:
        raise ValueError(
            f"progressive_start_epoch ({start}) must be <= progressive_end_epoch ({end})"
        )
    if epoch < start:
        return 0.0
    if epoch >= end:
        return 1.0
    return (epoch - start) / (end - start)


def expected_distribution(
    sample_probs: np.ndarray, labels: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """Expected class frequencies of a draw with per-sample probabilities ``sample_probs``.

    Used to log what the balanced draw does to the *other* task (e.g. the action mix when
    balancing offence_severity): ``sum`` of the probabilities of the samples in each class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    sample_probs = np.asarray(sample_probs, dtype=np.float64)
    if labels.shape != sample_probs.shape:
        raise ValueError(
            f"labels {labels.shape} and sample probabilities {sample_probs.shape} differ in length"
        )
    _check_range(labels, num_classes, "label")
    return np.bincount(labels, weights=sample_probs, minlength=num_classes)


class ClassBalancedSampler(Sampler[Draw]):
    """Draws ``num_samples`` samples per epoch at that epoch's class mix, each class a fixed
    number of times (see the module docstring), and yields them as :class:`Draw`.

    The per-epoch distribution depends only on the epoch and the fixed labels, and the draw
    only on ``(seed, epoch)``, so every DDP rank (and every rerun) draws the same list.
    Call :meth:`set_epoch` before each epoch (Lightning does, also through its distributed
    wrapper).
    """

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
        self.num_classes = int(num_classes)
        self.natural = natural_distribution(self.class_ids, self.num_classes)  # raises when empty
        self.target = capped_balanced_distribution(self.natural, oversample_factor)
        ramp_fraction(
            start_epoch, start_epoch, end_epoch
        )  # validates start <= end now, not mid-run
        if num_samples is not None and num_samples < 1:
            raise ValueError(
                f"sampling.samples_per_epoch must be >= 1 or null (= dataset size); got {num_samples}"
            )
        self.oversample_factor = float(oversample_factor)
        self.progressive = bool(progressive)
        self.start_epoch = int(start_epoch)
        self.end_epoch = int(end_epoch)
        self.num_samples = int(num_samples) if num_samples is not None else int(self.class_ids.size)
        self.seed = int(seed)
        self.epoch = 0
        self._class_counts = np.bincount(self.class_ids, minlength=self.num_classes)
        self._members = [np.flatnonzero(self.class_ids == c) for c in range(self.num_classes)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def class_distribution(self, epoch: int | None = None) -> np.ndarray:
        """Expected class frequencies of the draw at ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else epoch
        if not self.progressive:
            return self.target.copy()  # callers may log or edit it; the target stays fixed
        a = ramp_fraction(epoch, self.start_epoch, self.end_epoch)
        return (1.0 - a) * self.natural + a * self.target

    def sample_weights(self, epoch: int | None = None) -> np.ndarray:
        """Probability of drawing each sample at ``epoch``: ``q_c / n_c`` for its class ``c``."""
        per_class = np.divide(
            self.class_distribution(epoch),
            self._class_counts,
            out=np.zeros(self.num_classes),
            where=self._class_counts > 0,
        )
        return per_class[self.class_ids]

    def class_counts(self, epoch: int | None = None) -> np.ndarray:
        """How many times each class is drawn at ``epoch``: fixed, see :func:`epoch_class_counts`."""
        caps = np.floor(self.oversample_factor * self.natural * self.num_samples + 1e-9).astype(
            np.int64
        )
        return epoch_class_counts(self.class_distribution(epoch), self.num_samples, caps)

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        """The sample indices drawn at ``epoch``, in the order they are served."""
        epoch = self.epoch if epoch is None else epoch
        rng, _ = _epoch_streams(self.seed, epoch)
        chosen = []
        for cls, count in enumerate(self.class_counts(epoch)):
            members = self._members[cls]
            if count == 0:
                continue
            # Whole permutations of the class, then part of one more: each member is drawn
            # floor(count / n) or ceil(count / n) times.
            rounds, rest = divmod(int(count), members.size)
            chosen += [rng.permutation(members) for _ in range(rounds)]
            chosen.append(rng.permutation(members)[:rest])
        return rng.permutation(np.concatenate(chosen))

    def __iter__(self) -> Iterator[Draw]:
        _, samples = _epoch_streams(self.seed, self.epoch)
        return iter(_draws(self.epoch_indices(), samples))

    def __len__(self) -> int:
        return self.num_samples


class EpochShuffleSampler(Sampler[Draw]):
    """Uniform sampling (``sampling.use_class_balanced_sampler=false``): every sample once per
    epoch, in an order drawn from ``(seed, epoch)`` only, each as a :class:`Draw` with its seed.

    The stand-in for ``shuffle=True``, whose order comes from a generator that advances with every
    epoch: a run resumed at epoch 7 could not know where it stood.
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        if num_samples < 1:
            raise ValueError(f"EpochShuffleSampler needs at least one sample; got {num_samples}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        rng, _ = _epoch_streams(self.seed, self.epoch if epoch is None else epoch)
        return rng.permutation(self.num_samples)

    def __iter__(self) -> Iterator[Draw]:
        _, samples = _epoch_streams(self.seed, self.epoch)
        return iter(_draws(self.epoch_indices(), samples))

    def __len__(self) -> int:
        return self.num_samples


def _check_factor(oversample_factor: float) -> None:
    if not oversample_factor >= 1:  # also rejects NaN
        raise ValueError(
            f"sampling.oversample_factor must be >= 1 (1 = natural distribution); got {oversample_factor}"
        )


def _check_range(ids: np.ndarray, num_classes: int, what: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(
            f"{what} out of range: expected 0..{num_classes - 1}, got {ids.min()}..{ids.max()}"
        )
