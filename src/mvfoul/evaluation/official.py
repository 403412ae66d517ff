"""The official SoccerNet-MVFoul metric, and the predictions files it reads.

:func:`official_scores` reproduces ``SoccerNet.Evaluation.MV_FoulRecognition.evaluate``
(SoccerNet 0.2.0) number for number, quirks included:

* ground-truth actions are filtered and mapped by the official rules on their raw strings, with
  no whitespace trimming (:func:`mvfoul.labels.evaluator_view`);
* the predicted ``Offence`` is compared with the *raw* ground-truth string, so an action labelled
  ``No Offence``, ``Between`` or (a Dive) empty is never counted correct; the predicted
  ``Severity`` is compared with the normalised one, which is ``""`` for No offence and ``"1.0"``
  for every Dive judged an offence (a Dive with a card is matched by ``Offence``/``1.0`` and
  counted under its own ground-truth class);
* the action class is compared as raw strings;
* a ground-truth action without a prediction is counted wrong (one warning line with the count);
  predictions for other ids are ignored;
* balanced accuracy is the mean over **all** classes of correct/ground-truth counts, so a class
  absent from the ground truth makes it NaN (one warning line naming the absent classes);
* results are percentages.

The formula itself lives at the bottom of the layers, in
:func:`mvfoul.official_metric.scores_from_counts`, which training-time metrics feed with per-class
counts to get the same numbers.

Where the official code would crash (a missing field, a non-object entry, an action class outside
its vocabulary that survives the rules) a one-line :class:`~mvfoul.errors.DataError` is raised.

Predictions files are ``{"Set": "test", "Actions": {"<id>": {"Action class": ..., "Offence":
..., "Severity": ...}}}``, as the official VARS baseline writes them; the evaluator and the
EvalAI server read ``Actions`` only (``Set`` is optional).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

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
)
from mvfoul.official_metric import scores_from_counts

logger = logging.getLogger(__name__)

PREDICTION_FIELDS = LABEL_FIELDS  # ("Action class", "Offence", "Severity")
# The (Offence, Severity) pairs a prediction can carry: one per offence+severity class.
_PREDICTION_PAIRS = tuple(
    (prediction_strings(c, 0)["Offence"], prediction_strings(c, 0)["Severity"])
    for c in range(NUM_OFFENCE_SEVERITY)
)


# --- the metric ----------------------------------------------------------------------------


def official_scores(
    ground_truth: Mapping[str, Any], predictions: Mapping[str, Any]
) -> dict[str, float]:
    """The official metric on loaded ``{"Actions": {...}}`` dicts (ground truth, predictions).

    Same numbers as ``SoccerNet.Evaluation.MV_FoulRecognition.evaluate`` on the same JSON, quirks
    included (module docstring). Ids are compared as strings, as they are in JSON.
    """
    return _scores(ground_truth, predictions, "ground truth", "predictions")


def _scores(
    ground_truth: Mapping[str, Any], predictions: Mapping[str, Any], gt_name: str, pred_name: str
) -> dict[str, float]:
    gt_actions = _actions_object(ground_truth, gt_name)
    pred_actions = {str(k): v for k, v in _actions_object(predictions, pred_name).items()}
    os_total = np.zeros(NUM_OFFENCE_SEVERITY)
    os_correct = np.zeros(NUM_OFFENCE_SEVERITY)
    act_total = np.zeros(NUM_ACTION)
    act_correct = np.zeros(NUM_ACTION)
    missing: list[str] = []
    for action_id, entry in gt_actions.items():
        action_id = str(action_id)
        view = _ground_truth_view(gt_name, action_id, entry)
        if view is None:  # skipped by the official rules
            continue
        os_total[view.offence_severity] += 1
        act_total[view.action] += 1
        prediction = pred_actions.get(action_id)
        if prediction is None and action_id not in pred_actions:
            missing.append(action_id)
            continue
        _check_fields(pred_name, action_id, prediction)  # a mapping with the three fields
        prediction = cast(Mapping[str, Any], prediction)
        if prediction["Offence"] == view.offence and prediction["Severity"] == view.severity:
            os_correct[view.offence_severity] += 1
        if prediction["Action class"] == view.action_class:
            act_correct[view.action] += 1
    if missing:
        counted = int(os_total.sum())
        logger.warning(
            "%s: %d of %d ground-truth action(s) have no prediction; counted wrong, as the "
            "official evaluator does (e.g. %s)",
            pred_name,
            len(missing),
            counted,
            ", ".join(repr(i) for i in missing[:5]),
        )
    return scores_from_counts(os_total, os_correct, act_total, act_correct)


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
    """A one-line DataError where the official code would fail on ``entry`` (or, with ``strings``,
    where a field is not a string)."""
    if not isinstance(entry, Mapping):
        raise DataError(
            f"{name}: action {action_id!r} is {type(entry).__name__}, not an object with "
            f"{', '.join(repr(f) for f in PREDICTION_FIELDS)}"
        )
    for field in PREDICTION_FIELDS:
        if field not in entry:
            raise DataError(f"{name}: action {action_id!r} lacks the field {field!r}{hint}")
        if strings and not isinstance(entry[field], str):
            raise DataError(
                f"{name}: action {action_id!r}, field {field!r}: {entry[field]!r} is not a string"
            )


def _ground_truth_view(name: str, action_id: str, entry: Any) -> EvaluatorView | None:
    """The evaluator's view of one ground-truth action; None when it skips the action."""
    _check_fields(
        name,
        action_id,
        entry,
        strings=True,
        hint=" (an unlabelled, challenge, split cannot be scored)",
    )
    try:
        view = evaluator_view(entry["Action class"], entry["Offence"], entry["Severity"])
    except ValueError as err:
        raise DataError(
            f"{name}: action {action_id!r}, field 'Action class': {err} (allowed: "
            f"{', '.join(repr(c) for c in ACTION_CLASSES)}, 'Dont know' or ''); the official "
            f"evaluator fails on it: fix the annotation"
        ) from None
    return view if isinstance(view, EvaluatorView) else None


# --- files ---------------------------------------------------------------------------------


def evaluate_files(
    ground_truth_path: str | Path, predictions_path: str | Path, strict: bool = True
) -> dict[str, float]:
    """The official scores of a predictions file against a ground truth.

    The ground truth is an ``annotations.json``, a split folder holding one, or an mvfoul CSV
    (``.csv``: raw label strings, see :mod:`mvfoul.data.csv_annotations`). The predictions file
    is read by :func:`read_predictions` (``strict`` as there).
    """
    gt_path = Path(ground_truth_path).expanduser()
    ground_truth = read_ground_truth(gt_path)
    predictions = read_predictions(predictions_path, strict=strict)
    return _scores(
        ground_truth,
        predictions,
        f"ground truth {_source(gt_path)}",
        f"predictions {predictions_path}",
    )


def _source(path: Path) -> Path:
    return path / ANNOTATIONS_FILE if path.is_dir() else path


def read_ground_truth(path: str | Path) -> dict[str, Any]:
    """``{"Actions": {id: {"Action class", "Offence", "Severity"}}}`` with the raw strings of an
    ``annotations.json`` (or the split folder holding it) or of a labelled mvfoul CSV."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".csv":
        rows = parse_csv_rows(path, labelled=True)
        return {
            "Actions": {row.action_id: dict(zip(LABEL_FIELDS, row.labels or ())) for row in rows}
        }
    actions = load_actions_object(_source(path))
    return {"Actions": dict(actions)}


def prediction_entry(offence_severity: int, action: int) -> dict[str, str]:
    """The ``{"Action class", "Offence", "Severity"}`` entry for predicted class indices."""
    os_index, action_index = (
        _class_index(offence_severity, NUM_OFFENCE_SEVERITY),
        _class_index(action, NUM_ACTION),
    )
    if os_index is None or action_index is None:
        raise ValueError(
            f"prediction ({offence_severity!r}, {action!r}): expected an offence+severity class in "
            f"0..{NUM_OFFENCE_SEVERITY - 1} and an action class in 0..{NUM_ACTION - 1}"
        )
    return prediction_strings(os_index, action_index)


def _class_index(value: Any, count: int) -> int | None:
    try:
        index = int(value)
    except (TypeError, ValueError):
        return None
    return index if index == value and 0 <= index < count else None


def _id_order(action_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order (``"10"`` after ``"9"``), then any other id by its text."""
    return (0, int(action_id), "") if action_id.isdigit() else (1, 0, action_id)


def write_predictions(
    path: str | Path, predictions: Mapping[str, tuple[int, int]], set_name: str | None = None
) -> Path:
    """Write ``{"Set": set_name, "Actions": {"<id>": entry}}`` from ``id -> (offence+severity
    class, action class)``; ids as strings in numeric order, ``Set`` only when given. The file
    is replaced atomically (no half-written predictions). Returns the path."""
    path = Path(path).expanduser()
    actions: dict[str, dict[str, str]] = {}
    for key, value in predictions.items():
        action_id = str(key)
        if action_id in actions:
            raise ValueError(f"predictions: action id {action_id!r} appears twice ({key!r})")
        try:
            offence_severity, action = value
        except (TypeError, ValueError):
            raise ValueError(
                f"predictions: action {action_id!r}: {value!r} is not an (offence+severity, action) pair"
            ) from None
        try:
            actions[action_id] = prediction_entry(offence_severity, action)
        except ValueError as err:
            raise ValueError(f"predictions: action {action_id!r}: {err}") from None
    document: dict[str, Any] = {}
    if set_name is not None:
        document["Set"] = set_name
    document["Actions"] = {i: actions[i] for i in sorted(actions, key=_id_order)}
    write_atomically(path, json.dumps(document, indent=2) + "\n", overwrite=True)
    return path


def read_predictions(path: str | Path, strict: bool = True) -> dict[str, Any]:
    """Read and check a predictions file; returns the whole document (``Actions`` and any other
    top-level key).

    Every entry must be an object whose ``Action class``, ``Offence`` and ``Severity`` are
    strings. With ``strict`` (the default) the values must also be ones a prediction can carry
    (an action class, and ``No offence``/``""`` or ``Offence``/``1.0``, ``3.0``, ``5.0``): the
    evaluator would silently count anything else wrong. A malformed file raises a one-line
    DataError naming the file, the action id and the field.
    """
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
            allowed = ", ".join(f"{o!r}/{s!r}" for o, s in _PREDICTION_PAIRS)
            field = (
                "Offence"
                if entry["Offence"] not in {o for o, _ in _PREDICTION_PAIRS}
                else "Severity"
            )
            raise DataError(
                f"{name}: action {action_id!r}, field {field!r}: Offence/Severity "
                f"{pair[0]!r}/{pair[1]!r} is not a pair the evaluator can count correct "
                f"(allowed: {allowed})"
            )
    return document
