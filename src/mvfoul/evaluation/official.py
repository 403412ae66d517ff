"""The official SoccerNet-MVFoul metric and the predictions files it reads.

:func:`official_scores` reproduces SoccerNet 0.2.0's ``MV_FoulRecognition.evaluate`` number for
number, quirks included: the ground truth is filtered by the official rules on raw strings; the
predicted ``Offence`` is compared with the *raw* ground-truth string, ``Severity`` with the
normalised one; a missing prediction counts wrong; an absent class gives NaN. Where the official
code would crash (a missing field, an unknown action class) a one-line DataError is raised.
Predictions files: ``{"Set": "test", "Actions": {"<id>": {"Action class": ..., "Offence": ...,
"Severity": ...}}}``, as the VARS baseline writes them; ``Set`` is optional."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mvfoul.data.annotations import (
    ANNOTATIONS_FILE,
    LABEL_FIELDS,
    load_actions_object,
    read_json_document,
)
from mvfoul.data.csv_annotations import parse_csv_rows, write_atomically
from mvfoul.errors import DataError
from mvfoul.labels import (
    ACTION_CLASSES,
    NUM_ACTION,
    NUM_OFFENCE_SEVERITY,
    EvaluatorView,
    evaluator_view,
    prediction_strings,
    scores_from_counts,
)

logger = logging.getLogger(__name__)

# The (Offence, Severity) pairs a prediction can carry: one per offence+severity class.
_PREDICTION_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (prediction_strings(cls, 0)["Offence"], prediction_strings(cls, 0)["Severity"])
    for cls in range(NUM_OFFENCE_SEVERITY)
)


def official_scores(
    ground_truth: Mapping[str, Any],
    predictions: Mapping[str, Any],
    gt_name: str = "ground truth",
    pred_name: str = "predictions",
) -> dict[str, float]:
    """The official metric on loaded ``{"Actions": {...}}`` dicts; ids compared as strings."""
    gt_actions = _actions_object(ground_truth, gt_name)
    pred_actions = {str(k): v for k, v in _actions_object(predictions, pred_name).items()}
    # Per class: ground-truth actions, and those the prediction gets right.
    severity_total, severity_correct = np.zeros((2, NUM_OFFENCE_SEVERITY))
    action_total, action_correct = np.zeros((2, NUM_ACTION))
    missing: list[str] = []
    hint = " (an unlabelled, challenge, split cannot be scored)"
    for action_id, entry in gt_actions.items():
        action_id = str(action_id)
        _check_fields(gt_name, action_id, entry, strings=True, hint=hint)
        try:
            view = evaluator_view(entry["Action class"], entry["Offence"], entry["Severity"])
        except ValueError as err:
            raise DataError(
                f"{gt_name}: action {action_id!r}, field 'Action class': {err} (allowed: "
                f"{', '.join(repr(c) for c in ACTION_CLASSES)}, 'Dont know' or ''); the official "
                f"evaluator fails on it: fix the annotation"
            ) from None
        if not isinstance(view, EvaluatorView):  # skipped by the official rules
            continue
        severity_total[view.offence_severity] += 1
        action_total[view.action] += 1
        if action_id not in pred_actions:
            missing.append(action_id)
            continue
        prediction = pred_actions[action_id]
        _check_fields(pred_name, action_id, prediction)
        if prediction["Offence"] == view.offence and prediction["Severity"] == view.severity:
            severity_correct[view.offence_severity] += 1
        if prediction["Action class"] == view.action_class:
            action_correct[view.action] += 1
    if missing:
        logger.warning(
            "%s: %d of %d ground-truth action(s) have no prediction; counted wrong, as the "
            "official evaluator does (e.g. %s)",
            pred_name,
            len(missing),
            int(severity_total.sum()),
            ", ".join(repr(i) for i in missing[:5]),
        )
    return scores_from_counts(severity_total, severity_correct, action_total, action_correct)


def _actions_object(document: Any, name: str) -> Mapping[str, Any]:
    actions = document.get("Actions") if isinstance(document, Mapping) else None
    if not isinstance(actions, Mapping):
        raise DataError(
            f'{name}: no \'Actions\' object; expected {{"Actions": {{"<id>": {{"Action class": '
            f'..., "Offence": ..., "Severity": ...}}}}}}'
        )
    return actions


def _check_fields(
    name: str, action_id: str, entry: Any, strings: bool = False, hint: str = ""
) -> None:
    if not isinstance(entry, Mapping):
        raise DataError(
            f"{name}: action {action_id!r} is {type(entry).__name__}, not an object with "
            f"{', '.join(repr(f) for f in LABEL_FIELDS)}"
        )
    for field in LABEL_FIELDS:
        if field not in entry:
            raise DataError(f"{name}: action {action_id!r} lacks the field {field!r}{hint}")
        if strings and not isinstance(entry[field], str):
            raise DataError(
                f"{name}: action {action_id!r}, field {field!r}: {entry[field]!r} is not a string"
            )


def evaluate_files(
    ground_truth_path: str | Path, predictions_path: str | Path, strict: bool = True
) -> dict[str, float]:
    """The official scores of a predictions file against a ground truth (both read as below)."""
    gt_path = Path(ground_truth_path).expanduser()
    return official_scores(
        read_ground_truth(gt_path),
        read_predictions(predictions_path, strict=strict),
        f"ground truth {_source(gt_path)}",
        f"predictions {predictions_path}",
    )


def _source(path: Path) -> Path:
    return path / ANNOTATIONS_FILE if path.is_dir() else path


def read_ground_truth(path: str | Path) -> dict[str, Any]:
    """The raw label strings of an annotations.json (or its split folder) or a labelled CSV."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".csv":
        rows = parse_csv_rows(path, labelled=True)
        return {
            "Actions": {row.action_id: dict(zip(LABEL_FIELDS, row.labels or ())) for row in rows}
        }
    return {"Actions": dict(load_actions_object(_source(path)))}


def prediction_entry(offence_severity: int, action: int) -> dict[str, str]:
    """The ``{"Action class", "Offence", "Severity"}`` entry for predicted class indices."""
    for value, count in ((offence_severity, NUM_OFFENCE_SEVERITY), (action, NUM_ACTION)):
        try:
            valid = int(value) == value and 0 <= value < count
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(
                f"prediction ({offence_severity!r}, {action!r}): expected an offence+severity class "
                f"in 0..{NUM_OFFENCE_SEVERITY - 1} and an action class in 0..{NUM_ACTION - 1}"
            )
    return prediction_strings(offence_severity, action)


def write_predictions(
    path: str | Path, predictions: Mapping[str, tuple[int, int]], set_name: str | None = None
) -> Path:
    """Write ``id -> (offence+severity class, action class)`` atomically, numeric ids first in
    numeric order, ``Set`` only when given; return the path."""
    path = Path(path).expanduser()
    actions: dict[str, dict[str, str]] = {}
    for key, value in predictions.items():
        action_id = str(key)
        if action_id in actions:
            raise ValueError(f"predictions: action id {action_id!r} appears twice ({key!r})")
        try:
            actions[action_id] = prediction_entry(*value)
        except TypeError:  # not a pair
            raise ValueError(
                f"predictions: action {action_id!r}: {value!r} is not an (offence+severity, action) pair"
            ) from None
        except ValueError as err:
            raise ValueError(f"predictions: action {action_id!r}: {err}") from None

    def numeric_first(action_id: str) -> tuple[int, int, str]:
        if action_id.isdigit():
            return 0, int(action_id), ""
        return 1, 0, action_id

    document: dict[str, Any] = {} if set_name is None else {"Set": set_name}
    document["Actions"] = {i: actions[i] for i in sorted(actions, key=numeric_first)}
    write_atomically(path, json.dumps(document, indent=2) + "\n", overwrite=True)
    return path


def read_predictions(path: str | Path, strict: bool = True) -> dict[str, Any]:
    """The document, checked for three strings per entry and, with ``strict``, for values a
    prediction can carry (the evaluator would silently count anything else wrong)."""
    path = Path(path).expanduser()
    fix = "write it with mvfoul.evaluation.official.write_predictions (or evaluate_hydra.py)"
    document = read_json_document(path, "predictions file", fix, missing_fix="check the path")
    name = f"predictions file {path}"
    actions = _actions_object(document, name)
    if "Set" in document and not isinstance(document["Set"], str):
        raise DataError(f"{name}: 'Set' is {document['Set']!r}, not a string such as \"test\"")
    for action_id, entry in actions.items():
        _check_fields(name, action_id, entry, strings=True)
        if not strict:
            continue
        if entry["Action class"] not in ACTION_CLASSES:
            raise DataError(
                f"{name}: action {action_id!r}, field 'Action class': {entry['Action class']!r} "
                f"is not one of {', '.join(repr(c) for c in ACTION_CLASSES)}"
            )
        pair = (entry["Offence"], entry["Severity"])
        if pair not in _PREDICTION_PAIRS:
            known = pair[0] in {offence for offence, _ in _PREDICTION_PAIRS}
            field = "Severity" if known else "Offence"
            allowed = ", ".join(
                f"{offence!r}/{severity!r}" for offence, severity in _PREDICTION_PAIRS
            )
            raise DataError(
                f"{name}: action {action_id!r}, field {field!r}: Offence/Severity "
                f"{pair[0]!r}/{pair[1]!r} is not a pair the evaluator can count correct "
                f"(allowed: {allowed})"
            )
    return document
