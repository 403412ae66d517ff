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

The draw is with replacement, from a generator seeded by ``(seed, epoch)`` only: every DDP rank
builds the same index list, and the distributed wrapper shards it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from mvfoul.labels import ACTION_CLASSES, OFFENCE_SEVERITY_CLASSES

if TYPE_CHECKING:
    from mvfoul.data.annotations import Action

BALANCE_TASKS = ("offence_severity", "action", "joint")


def labels_of(actions: Sequence[Action]) -> tuple[np.ndarray, np.ndarray]:
    """The (offence_severity, action) class indices of labelled actions, as two int arrays."""
    unlabelled = [a.action_id for a in actions if a.labels is None]
    if unlabelled:
        raise ValueError(f"class-balanced sampling needs labelled actions; unlabelled: {unlabelled[:5]}")
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
        raise ValueError("class-balanced sampling needs at least one labelled sample; the label list is empty")
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
        raise ValueError(f"progressive_start_epoch ({start}) must be <= progressive_end_epoch ({end})")
    if epoch < start:
        return 0.0
    if epoch >= end:
        return 1.0
    return (epoch - start) / (end - start)


def expected_distribution(sample_probs: np.ndarray, labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """Expected class frequencies of a draw with per-sample probabilities ``sample_probs``.

    Used to log what the balanced draw does to the *other* task (e.g. the action mix when
    balancing offence_severity): ``sum`` of the probabilities of the samples in each class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    sample_probs = np.asarray(sample_probs, dtype=np.float64)
    if labels.shape != sample_probs.shape:
        raise ValueError(f"labels {labels.shape} and sample probabilities {sample_probs.shape} differ in length")
    _check_range(labels, num_classes, "label")
    return np.bincount(labels, weights=sample_probs, minlength=num_classes)


class ClassBalancedSampler(Sampler[int]):
    """Draws ``num_samples`` indices per epoch, with replacement, at that epoch's class mix.

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
        ramp_fraction(start_epoch, start_epoch, end_epoch)  # validates start <= end now, not mid-run
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"sampling.samples_per_epoch must be >= 1 or null (= dataset size); got {num_samples}")
        self.oversample_factor = float(oversample_factor)
        self.progressive = bool(progressive)
        self.start_epoch = int(start_epoch)
        self.end_epoch = int(end_epoch)
        self.num_samples = int(num_samples) if num_samples is not None else int(self.class_ids.size)
        self.seed = int(seed)
        self.epoch = 0
        self._class_counts = np.bincount(self.class_ids, minlength=self.num_classes)

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

    def _generator(self, epoch: int) -> torch.Generator:
        # SeedSequence mixes (seed, epoch) into well-spread state, so neighbouring seeds or
        # epochs don't give correlated streams; the mask keeps the value a valid torch seed.
        state = np.random.SeedSequence([self.seed % 2**64, epoch % 2**64]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & (2**63 - 1))

    def __iter__(self) -> Iterator[int]:
        weights = torch.from_numpy(self.sample_weights(self.epoch))
        draw = torch.multinomial(weights, self.num_samples, replacement=True, generator=self._generator(self.epoch))
        return iter(draw.tolist())

    def __len__(self) -> int:
        return self.num_samples


def _check_factor(oversample_factor: float) -> None:
    if not oversample_factor >= 1:  # also rejects NaN
        raise ValueError(
            f"sampling.oversample_factor must be >= 1 (1 = natural distribution); got {oversample_factor}"
        )


def _check_range(ids: np.ndarray, num_classes: int, what: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"{what} out of range: expected 0..{num_classes - 1}, got {ids.min()}..{ids.max()}")
