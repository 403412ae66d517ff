"""Class vocabularies, the official SoccerNet-MVFoul label rules and the official metric.

The rules (:func:`_apply_rules`) and the metric (:func:`scores_from_counts`) reproduce the
SoccerNet evaluator and the VARS baseline, quirks included. The evaluator compares the predicted
``Offence`` with the *raw* ground-truth string, so an action labelled ``No Offence``, ``Between``
or (a Dive) empty can never be matched; and it expects severity ``1.0`` from every Dive judged an
offence, whatever its card. mvfoul trims surrounding whitespace; the evaluator does not.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

OFFENCE_SEVERITY_CLASSES: tuple[str, ...] = (
    "No offence",
    "Offence + No card",
    "Offence + Yellow card",
    "Offence + Red card",
)
ACTION_CLASSES: tuple[str, ...] = (
    "Tackling",
    "Standing tackling",
    "High leg",
    "Holding",
    "Pushing",
    "Elbowing",
    "Challenge",
    "Dive",
)
NUM_OFFENCE_SEVERITY = len(OFFENCE_SEVERITY_CLASSES)
NUM_ACTION = len(ACTION_CLASSES)

# The model's two heads, each with its classes and the short prefix of its metric names
# (val/sev_acc, val/action_bacc): the one table every loss, metric and report reads.
HEADS: tuple[str, ...] = ("offence_severity", "action")
HEAD_CLASSES: dict[str, tuple[str, ...]] = {
    "offence_severity": OFFENCE_SEVERITY_CLASSES,
    "action": ACTION_CLASSES,
}
HEAD_METRIC_PREFIX: dict[str, str] = {"offence_severity": "sev", "action": "action"}

# Every raw string annotations.json uses for each label field (before the rules). A value outside
# these is a typo or a newer vocabulary, never a legitimate "undecided" label.
ACTION_CLASS_VALUES: tuple[str, ...] = (*ACTION_CLASSES, "Dont know", "")
OFFENCE_VALUES: tuple[str, ...] = ("Offence", "No offence", "No Offence", "Between", "")
SEVERITY_VALUES: tuple[str, ...] = ("", "1.0", "2.0", "3.0", "4.0", "5.0")

_UNSURE_OFFENCE = ("", "Between")
_UNSURE_SEVERITY = ("", "2.0", "4.0")
_SEVERITY_TO_CLASS = {"1.0": 1, "3.0": 2, "5.0": 3}  # for actions judged an offence
# Offence+severity class -> the (Offence, Severity) strings a prediction file carries.
_CLASS_TO_PREDICTION = {
    0: ("No offence", ""),
    1: ("Offence", "1.0"),
    2: ("Offence", "3.0"),
    3: ("Offence", "5.0"),
}
_PREDICTION_TO_CLASS = {strings: cls for cls, strings in _CLASS_TO_PREDICTION.items()}


@dataclass(frozen=True)
class OfficialLabels:
    action_class: str
    offence: str  # normalised: "Offence" or the raw "No offence"/"No Offence"
    severity: str  # normalised: "1.0", "3.0" or "5.0" (or the raw value for No offence)
    offence_severity: int  # index into OFFENCE_SEVERITY_CLASSES
    action: int  # index into ACTION_CLASSES
    # The class whose prediction strings the evaluator counts as correct: mostly
    # ``offence_severity``; 1 for a Dive judged an offence (whatever its card); -1 when none can
    # match (raw offence "No Offence", "Between" or empty, or strings the evaluator skips).
    severity_match: int


@dataclass(frozen=True)
class EvaluatorView:
    """One ground-truth action as the SoccerNet evaluator sees it: a prediction is correct when
    its ``Offence``/``Severity`` equal :attr:`offence`/:attr:`severity` (offence+severity task)
    and its ``Action class`` equals :attr:`action_class` (action task)."""

    offence_severity: int  # ground-truth class (index into OFFENCE_SEVERITY_CLASSES)
    action: int  # ground-truth class (index into ACTION_CLASSES)
    action_class: str  # the raw "Action class" string a prediction must repeat
    offence: str  # the RAW ground-truth "Offence" string ("", "Between", "No Offence" included)
    severity: str  # the normalised severity: "" for No offence, "1.0" for a Dive, else its card


def _apply_rules(action_class: str, offence: str, severity: str) -> tuple[str, str, int] | str:
    """The official filtering and mapping on the strings exactly as given: the mapped (offence,
    severity) and offence+severity class, or why the action is dropped."""
    is_dive = action_class == "Dive"
    is_no_offence = offence in ("No offence", "No Offence")

    if action_class in ("", "Dont know"):
        return f"action class {action_class!r} is not a class"
    if offence in _UNSURE_OFFENCE and not is_dive:
        return f"offence {offence!r} is undecided"
    if severity in _UNSURE_SEVERITY and not is_dive and not is_no_offence:
        return f"severity {severity!r} is undecided"

    if offence in _UNSURE_OFFENCE:
        offence = "Offence"
    if severity in _UNSURE_SEVERITY:
        severity = "1.0"

    if is_no_offence:
        return offence, severity, 0
    if offence == "Offence" and severity in _SEVERITY_TO_CLASS:
        return offence, severity, _SEVERITY_TO_CLASS[severity]
    return f"offence {offence!r} with severity {severity!r} is not an official class"


def evaluator_view(action_class: str, offence: str, severity: str) -> EvaluatorView | str:
    """What ``SoccerNet.Evaluation.MV_FoulRecognition.evaluate`` makes of one ground-truth action
    (untrimmed strings): the view, or why it skips the action. Raises ValueError where the
    evaluator itself fails: an unknown action class that survives the rules."""
    verdict = _apply_rules(action_class, offence, severity)
    if isinstance(verdict, str):
        return verdict
    _, mapped_severity, offence_severity = verdict
    if action_class not in ACTION_CLASSES:
        raise ValueError(f"unknown action class {action_class!r}")
    # The evaluator's own normalisation, after it has picked the class: a Dive always expects
    # "1.0" (even a Dive with a card), a No offence always expects "".
    if action_class == "Dive":
        mapped_severity = "1.0"
    if offence_severity == 0:
        mapped_severity = ""
    action = ACTION_CLASSES.index(action_class)
    return EvaluatorView(offence_severity, action, action_class, offence, mapped_severity)


def official_labels(action_class: str, offence: str, severity: str) -> OfficialLabels | str:
    """The official rules on one action's trimmed raw strings: its labels, or a short reason why
    the evaluator drops it. ``severity_match`` comes from the untrimmed strings, as the evaluator
    compares them."""
    raw = (action_class or "", offence or "", severity or "")
    action_class, offence, severity = (value.strip() for value in raw)

    if action_class not in ACTION_CLASS_VALUES:  # "" and "Dont know" are the rules' to drop
        return f"unknown action class {action_class!r}"
    verdict = _apply_rules(action_class, offence, severity)
    if isinstance(verdict, str):
        return verdict
    offence, severity, offence_severity = verdict

    match = -1  # where the evaluator skips the action or fails on its untrimmed class
    with suppress(ValueError):
        view = evaluator_view(*raw)
        if isinstance(view, EvaluatorView):
            match = _PREDICTION_TO_CLASS.get((view.offence, view.severity), -1)
    action = ACTION_CLASSES.index(action_class)
    return OfficialLabels(action_class, offence, severity, offence_severity, action, match)


def vocabulary_problem(action_class: str, offence: str, severity: str) -> str | None:
    """Which raw label string (trimmed) is outside the dataset's vocabulary, e.g.
    ``"action class 'Tacklin'"``; None when all three are known values."""
    for field, value, allowed in (
        ("action class", action_class, ACTION_CLASS_VALUES),
        ("offence", offence, OFFENCE_VALUES),
        ("severity", severity, SEVERITY_VALUES),
    ):
        if (value or "").strip() not in allowed:
            return f"{field} {value!r}"
    return None


def prediction_strings(offence_severity: int, action: int) -> dict[str, str]:
    """The ``{"Action class", "Offence", "Severity"}`` entry of an official predictions file."""
    offence, severity = _CLASS_TO_PREDICTION[int(offence_severity)]
    return {"Action class": ACTION_CLASSES[int(action)], "Offence": offence, "Severity": severity}


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
    """The official scores (percent). ``*_total[c]``: ground-truth actions of class ``c``;
    ``*_correct[c]``: those the evaluator counts correct. Computed in the evaluator's own order of
    operations, so the floats are the same. A class without ground-truth actions makes its
    balanced accuracy NaN, as officially; a warning names such classes unless ``warn=False``."""
    counts = (offence_severity_total, offence_severity_correct, action_total, action_correct)
    os_total, os_correct, act_total, act_correct = (
        np.asarray(values, dtype=np.float64).reshape(-1) for values in counts
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
    scores = (accuracy_os, accuracy_action, balanced_os, balanced_action, leaderboard)
    return {key: float(value * 100) for key, value in zip(SCORE_KEYS, scores)}
