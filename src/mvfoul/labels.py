"""Class vocabularies and the official SoccerNet-MVFoul label rules.

The rules here reproduce what the SoccerNet evaluator and the official VARS baseline do, quirks
included, so that the actions mvfoul trains and scores on are exactly the official ones:

* an action is dropped when its action class is empty or ``Dont know``;
* ... when its offence is empty or ``Between`` and it is not a ``Dive``;
* ... when its severity is empty, ``2.0`` or ``4.0`` and it is neither a ``Dive`` nor
  ``No offence``;
* then an empty/``Between`` offence becomes ``Offence`` and an empty/``2.0``/``4.0`` severity
  becomes ``1.0``;
* offence + severity class: ``No offence`` (either capitalisation) -> 0, ``Offence`` with
  ``1.0`` -> 1, ``3.0`` -> 2, ``5.0`` -> 3.
"""

from __future__ import annotations

from dataclasses import dataclass

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

ACTION_INDEX = {name: i for i, name in enumerate(ACTION_CLASSES)}

_NO_OFFENCE_SPELLINGS = ("No offence", "No Offence")
_UNSURE_OFFENCE = ("", "Between")
_UNSURE_SEVERITY = ("", "2.0", "4.0")
# Severity string -> offence+severity class, for actions judged an offence.
_SEVERITY_TO_CLASS = {"1.0": 1, "3.0": 2, "5.0": 3}
# Offence+severity class -> the (Offence, Severity) strings a prediction file carries.
_CLASS_TO_PREDICTION = {
    0: ("No offence", ""),
    1: ("Offence", "1.0"),
    2: ("Offence", "3.0"),
    3: ("Offence", "5.0"),
}


@dataclass(frozen=True)
class OfficialLabels:
    """The labels of one action after the official filtering and mapping."""

    action_class: str
    offence: str  # normalised: "Offence" or the raw "No offence"/"No Offence"
    severity: str  # normalised: "1.0", "3.0" or "5.0" (or the raw value for No offence)
    offence_severity: int  # index into OFFENCE_SEVERITY_CLASSES
    action: int  # index into ACTION_CLASSES


def official_labels(action_class: str, offence: str, severity: str) -> OfficialLabels | str:
    """Apply the official rules to one action's raw annotation strings.

    Returns the labels, or a short reason (a string) why the official evaluator drops the action.
    """
    action_class = (action_class or "").strip()
    offence = (offence or "").strip()
    severity = (severity or "").strip()
    is_dive = action_class == "Dive"
    is_no_offence = offence in _NO_OFFENCE_SPELLINGS

    if action_class in ("", "Dont know"):
        return f"action class {action_class!r} is not a class"
    if action_class not in ACTION_INDEX:
        return f"unknown action class {action_class!r}"
    if offence in _UNSURE_OFFENCE and not is_dive:
        return f"offence {offence!r} is undecided"
    if severity in _UNSURE_SEVERITY and not is_dive and not is_no_offence:
        return f"severity {severity!r} is undecided"

    if offence in _UNSURE_OFFENCE:
        offence = "Offence"
    if severity in _UNSURE_SEVERITY:
        severity = "1.0"

    if is_no_offence:
        offence_severity = 0
    elif offence == "Offence" and severity in _SEVERITY_TO_CLASS:
        offence_severity = _SEVERITY_TO_CLASS[severity]
    else:
        return f"offence {offence!r} with severity {severity!r} is not an official class"

    return OfficialLabels(
        action_class=action_class,
        offence=offence,
        severity=severity,
        offence_severity=offence_severity,
        action=ACTION_INDEX[action_class],
    )


def prediction_strings(offence_severity: int, action: int) -> dict[str, str]:
    """The ``{"Action class", "Offence", "Severity"}`` entry of an official predictions file."""
    offence, severity = _CLASS_TO_PREDICTION[int(offence_severity)]
    return {"Action class": ACTION_CLASSES[int(action)], "Offence": offence, "Severity": severity}
