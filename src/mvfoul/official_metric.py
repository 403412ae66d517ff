"""The official SoccerNet-MVFoul formula: the scores from per-class counts.

At the bottom of mvfoul's layers (beside :mod:`mvfoul.labels`), so that training-time metrics
(:mod:`mvfoul.training.metrics`) and the evaluator (:mod:`mvfoul.evaluation.official`, which
counts from predictions files) share it. Per-class counts: ground-truth actions per class and
those of them counted correct (see :attr:`mvfoul.labels.OfficialLabels.severity_match`).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from mvfoul.labels import ACTION_CLASSES, NUM_ACTION, NUM_OFFENCE_SEVERITY, OFFENCE_SEVERITY_CLASSES

logger = logging.getLogger(__name__)

SCORE_KEYS: tuple[str, ...] = (
    "accuracy_offence_severity",
    "accuracy_action",
    "balanced_accuracy_offence_severity",
    "balanced_accuracy_action",
    "leaderboard_value",
)


def scores_from_counts(
    offence_severity_total: npt.ArrayLike,
    offence_severity_correct: npt.ArrayLike,
    action_total: npt.ArrayLike,
    action_correct: npt.ArrayLike,
    warn: bool = True,
) -> dict[str, float]:
    """The official scores (percent) from per-class counts.

    ``*_total[c]``: ground-truth actions of class ``c``; ``*_correct[c]``: those of them the
    evaluator counts correct (4 offence+severity classes, 8 action classes; lists, NumPy arrays
    or CPU tensors). Computed in the evaluator's own order of operations, so the floats are the
    same. A class with no ground-truth action makes its balanced accuracy NaN, as officially;
    a warning names such classes (``warn=False``: the caller reports it its own way).
    """
    os_total = _counts(offence_severity_total, NUM_OFFENCE_SEVERITY, "offence_severity_total")
    os_correct = _counts(offence_severity_correct, NUM_OFFENCE_SEVERITY, "offence_severity_correct")
    act_total = _counts(action_total, NUM_ACTION, "action_total")
    act_correct = _counts(action_correct, NUM_ACTION, "action_correct")
    for total, correct, name in (
        (os_total, os_correct, "offence_severity"),
        (act_total, act_correct, "action"),
    ):
        if np.any(correct > total) or np.any(correct < 0):
            raise ValueError(
                f"{name}: correct counts {correct.tolist()} must lie in [0, total {total.tolist()}]"
            )

    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy_os = np.sum(os_correct) / np.sum(os_total)
        accuracy_action = np.sum(act_correct) / np.sum(act_total)
        balanced_os = np.mean(os_correct / os_total)
        balanced_action = np.mean(act_correct / act_total)
    leaderboard = balanced_os * 0.5 + balanced_action * 0.5

    absent = [
        f"{task} {', '.join(repr(names[c]) for c in np.flatnonzero(total == 0))}"
        for task, names, total in (
            ("offence+severity", OFFENCE_SEVERITY_CLASSES, os_total),
            ("action", ACTION_CLASSES, act_total),
        )
        if np.any(total == 0)
    ]
    if absent and warn:
        logger.warning(
            "balanced accuracy is NaN, as the official evaluator gives it: class(es) absent from "
            "the ground truth: %s",
            "; ".join(absent),
        )
    results = {
        "accuracy_offence_severity": accuracy_os * 100,
        "accuracy_action": accuracy_action * 100,
        "balanced_accuracy_offence_severity": balanced_os * 100,
        "balanced_accuracy_action": balanced_action * 100,
        "leaderboard_value": leaderboard * 100,
    }
    return {key: float(value) for key, value in results.items()}


def _counts(values: npt.ArrayLike, length: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.shape != (length,):
        raise ValueError(
            f"{name}: expected {length} per-class counts, got shape {np.shape(values)}"
        )
    return array
