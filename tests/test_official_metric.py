"""The official SoccerNet-MVFoul metric: mvfoul's numbers equal SoccerNet 0.2.0's, quirks included."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest

from mvfoul.errors import DataError
from mvfoul.evaluation.official import (
    evaluate_files,
    official_scores,
    prediction_entry,
    read_ground_truth,
    read_predictions,
    write_predictions,
)
from mvfoul.labels import (
    ACTION_CLASSES,
    NUM_ACTION,
    NUM_OFFENCE_SEVERITY,
    OFFENCE_SEVERITY_CLASSES,
    SCORE_KEYS,
    OfficialLabels,
    official_labels,
    prediction_strings,
    scores_from_counts,
)

LOGGER = "mvfoul"  # the evaluator (mvfoul.evaluation.official) and the formula (mvfoul.labels)

# Every raw string annotations.json uses, plus whitespace variants the evaluator does not trim.
RAW_ACTION_CLASSES = (*ACTION_CLASSES, "Dont know", "")
RAW_OFFENCES = ("Offence", "No offence", "No Offence", "Between", "")
RAW_SEVERITIES = ("", "1.0", "2.0", "3.0", "4.0", "5.0")
SPACED_OFFENCES = ("Offence ", " No offence")
SPACED_SEVERITIES = (" 1.0", "3.0 ", " ")
# (Offence, Severity) of prediction files mvfoul never writes but the evaluator still compares.
ODD_PAIRS = (
    ("No Offence", ""),
    ("Between", "1.0"),
    ("", "1.0"),
    ("Offence", "2.0"),
    ("No offence", "1.0"),
)


@pytest.fixture(scope="module")
def soccernet_evaluate():
    """``SoccerNet.Evaluation.MV_FoulRecognition.evaluate``, quiet (it prints), on two paths."""
    module = pytest.importorskip(
        "SoccerNet.Evaluation.MV_FoulRecognition",
        reason="SoccerNet 0.2.0 is not installed (pip install -e '.[dev]'): no reference to compare with",
    )

    def run(ground_truth: Path, predictions: Path) -> dict[str, float]:
        with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
            return module.evaluate(str(ground_truth), str(predictions))

    return run


@pytest.fixture(scope="module")
def soccernet_or_none(request):
    """The official evaluator where installed, else None (for tests whose own checks stand alone)."""
    try:
        return request.getfixturevalue("soccernet_evaluate")
    except pytest.skip.Exception:
        return None


def _same(ours: dict[str, float], theirs: dict[str, float]) -> bool:
    """Same keys, same floats, NaN equal to NaN."""
    if set(ours) != set(theirs):
        return False
    return all(
        (math.isnan(ours[k]) and math.isnan(theirs[k])) or ours[k] == theirs[k] for k in theirs
    )


def _entry(action_class: str, offence: str, severity: str) -> dict[str, str]:
    return {"Action class": action_class, "Offence": offence, "Severity": severity}


def _write_json(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _random_ground_truth(rng: random.Random, spaced: bool) -> dict[str, dict[str, str]]:
    """A random labelled split: raw strings of every kind, classes often absent."""
    n = rng.choice([1, 3, 8, 20, 40, 80])
    entries = []
    if rng.random() < 0.3:  # every class of both tasks present at least once
        entries += [_entry("Tackling", "No offence", ""), _entry("Tackling", "Offence", "1.0")]
        entries += [_entry("Holding", "Offence", "3.0"), _entry("Pushing", "Offence", "5.0")]
        entries += [_entry(name, "Offence", "3.0") for name in ACTION_CLASSES]
    offences = RAW_OFFENCES + (SPACED_OFFENCES if spaced else ())
    severities = RAW_SEVERITIES + (SPACED_SEVERITIES if spaced else ())
    for _ in range(n):
        if rng.random() < 0.6:  # mostly actions that count, so scores are not all NaN
            entries.append(
                _entry(
                    rng.choice(ACTION_CLASSES),
                    rng.choice(["Offence", "No offence"]),
                    rng.choice(["1.0", "3.0", "5.0", ""]),
                )
            )
        else:
            entries.append(
                _entry(rng.choice(RAW_ACTION_CLASSES), rng.choice(offences), rng.choice(severities))
            )
    # The quirks, often: a Dive with an empty offence, a Dive with a card, both No offence spellings.
    for quirk in (
        _entry("Dive", "", ""),
        _entry("Dive", "Offence", "3.0"),
        _entry("Challenge", "No Offence", ""),
    ):
        if rng.random() < 0.5:
            entries.append(quirk)
    rng.shuffle(entries)
    ids = rng.sample(range(10 * len(entries) + 10), len(entries))
    return {str(i): e for i, e in zip(ids, entries)}


def _random_predictions(
    rng: random.Random, ground_truth: dict[str, dict[str, str]], odd: bool
) -> tuple[dict[str, dict], dict[str, tuple[int, int]]]:
    """Prediction entries (some missing, some extra, some odd strings) and the class pairs behind
    the regular ones."""
    entries: dict[str, dict] = {}
    classes: dict[str, tuple[int, int]] = {}
    for action_id, gt in ground_truth.items():
        if rng.random() < 0.1:
            continue  # missing: counted wrong
        labels = official_labels(gt["Action class"], gt["Offence"], gt["Severity"])
        if (
            isinstance(labels, OfficialLabels) and rng.random() < 0.4
        ):  # right, by the official's rules
            pair = (
                labels.severity_match if labels.severity_match >= 0 else labels.offence_severity,
                labels.action,
            )
        else:
            pair = (rng.randrange(NUM_OFFENCE_SEVERITY), rng.randrange(NUM_ACTION))
        classes[action_id] = pair
        entries[action_id] = prediction_strings(*pair)
    for _ in range(rng.choice([0, 0, 2, 5])):  # extras: ignored
        extra = str(rng.randrange(10_000, 20_000))
        classes[extra] = (rng.randrange(NUM_OFFENCE_SEVERITY), rng.randrange(NUM_ACTION))
        entries[extra] = prediction_strings(*classes[extra])
    if odd:
        for action_id in rng.sample(sorted(entries), k=max(1, len(entries) // 4)):
            offence, severity = rng.choice(ODD_PAIRS)
            action_class = rng.choice(
                ["Dont know", ground_truth.get(action_id, {}).get("Action class", "Dive")]
            )
            entries[action_id] = _entry(action_class, offence, severity)
            classes.pop(action_id)
    return entries, classes


def _scores_from_class_predictions(ground_truth, classes) -> dict[str, float]:
    """The training-time path: per-class counts from official_labels + severity_match."""
    os_total, os_correct = np.zeros(NUM_OFFENCE_SEVERITY), np.zeros(NUM_OFFENCE_SEVERITY)
    act_total, act_correct = np.zeros(NUM_ACTION), np.zeros(NUM_ACTION)
    for action_id, gt in ground_truth.items():
        labels = official_labels(gt["Action class"], gt["Offence"], gt["Severity"])
        if not isinstance(labels, OfficialLabels):
            continue
        os_total[labels.offence_severity] += 1
        act_total[labels.action] += 1
        if action_id in classes:
            os_pred, action_pred = classes[action_id]
            os_correct[labels.offence_severity] += os_pred == labels.severity_match
            act_correct[labels.action] += action_pred == labels.action
    return scores_from_counts(os_total, os_correct, act_total, act_correct)


# --- equality with the official evaluator --------------------------------------------------


def test_random_cases_score_exactly_as_the_official_evaluator(soccernet_evaluate, tmp_path):
    """200 seeded ground truths x prediction sets: every quirk, missing and extra ids, absent
    classes (NaN on both sides). Three mvfoul paths must agree with the official numbers."""
    nan_cases = full_cases = 0
    for seed in range(200):
        rng = random.Random(seed)
        spaced, odd = seed % 4 == 1, seed % 4 == 2
        ground_truth = _random_ground_truth(rng, spaced)
        entries, classes = _random_predictions(rng, ground_truth, odd)
        gt_path = _write_json(
            tmp_path / f"gt_{seed}.json", {"Set": "test", "Actions": ground_truth}
        )
        pred_path = _write_json(tmp_path / f"pred_{seed}.json", {"Actions": entries})

        official = soccernet_evaluate(gt_path, pred_path)
        ours = official_scores({"Actions": ground_truth}, {"Actions": entries})
        assert _same(ours, official), (seed, ours, official)
        assert _same(evaluate_files(gt_path, pred_path, strict=not odd), official), seed
        if not spaced and not odd:  # what training computes from class indices alone
            assert _same(_scores_from_class_predictions(ground_truth, classes), official), seed
        nan_cases += math.isnan(official["leaderboard_value"])
        full_cases += not math.isnan(official["leaderboard_value"])
    assert nan_cases > 20 and full_cases > 20  # both regimes were exercised


def test_dive_with_a_card_is_matched_by_no_card_and_counted_under_its_card(
    soccernet_evaluate, tmp_path
):
    ground_truth = {
        "0": _entry("Tackling", "No offence", ""),
        "1": _entry("Holding", "Offence", "1.0"),
        "2": _entry("Dive", "Offence", "3.0"),  # class 2 (yellow), but the evaluator wants "1.0"
        "3": _entry("Pushing", "Offence", "5.0"),
        **{str(10 + i): _entry(name, "Offence", "1.0") for i, name in enumerate(ACTION_CLASSES)},
    }
    dive = official_labels("Dive", "Offence", "3.0")
    assert (dive.offence_severity, dive.severity_match) == (2, 1)
    predictions = {
        i: (official_labels(*e.values()).severity_match, official_labels(*e.values()).action)
        for i, e in ground_truth.items()
    }
    pred_path = write_predictions(tmp_path / "pred.json", predictions)
    assert read_predictions(pred_path)["Actions"]["2"] == _entry("Dive", "Offence", "1.0")
    gt_path = _write_json(tmp_path / "gt.json", {"Actions": ground_truth})
    official = soccernet_evaluate(gt_path, pred_path)
    # All correct, and every class (class 2 only through the Dive) present: 100 everywhere.
    assert official == {key: 100.0 for key in SCORE_KEYS}
    assert evaluate_files(gt_path, pred_path) == official
    # The "right" class (yellow card) is counted wrong by the evaluator.
    predictions["2"] = (2, 7)
    write_predictions(pred_path, predictions)
    official = soccernet_evaluate(gt_path, pred_path)
    assert official["balanced_accuracy_offence_severity"] == 75.0
    assert evaluate_files(gt_path, pred_path) == official


def test_severity_match_is_the_class_the_evaluator_accepts(soccernet_evaluate, tmp_path):
    """Brute force over every raw combination (and whitespace variants): for a one-action
    ground truth, the evaluator accepts exactly the strings of class ``severity_match``."""
    combos = itertools.chain(
        itertools.product(RAW_ACTION_CLASSES, RAW_OFFENCES, RAW_SEVERITIES),
        itertools.product(("Tackling", "Dive"), SPACED_OFFENCES, RAW_SEVERITIES),
        itertools.product(("Tackling", "Dive"), ("Offence", "No offence", ""), SPACED_SEVERITIES),
    )
    seen = {}
    for k, (action_class, offence, severity) in enumerate(combos):
        labels = official_labels(action_class, offence, severity)
        if not isinstance(labels, OfficialLabels):
            continue
        gt_path = _write_json(
            tmp_path / f"gt_{k}.json", {"Actions": {"7": _entry(action_class, offence, severity)}}
        )
        accepted = set()
        for c in range(NUM_OFFENCE_SEVERITY):
            pred_path = write_predictions(
                tmp_path / f"pred_{k}_{c}.json", {"7": (c, labels.action)}
            )
            official = soccernet_evaluate(gt_path, pred_path)
            if official["accuracy_offence_severity"] == 100.0:
                accepted.add(c)
        expected = {labels.severity_match} if labels.severity_match >= 0 else set()
        assert accepted == expected, (action_class, offence, severity, labels)
        seen[(action_class, offence, severity)] = labels.severity_match
    # The quirks, spelled out.
    assert seen[("Tackling", "No offence", "")] == 0 and seen[("Tackling", "No Offence", "")] == -1
    assert seen[("Tackling", "No offence", "5.0")] == 0  # No offence ignores the severity
    assert seen[("Dive", "", "")] == -1 and seen[("Dive", "Between", "1.0")] == -1
    assert seen[("Dive", "Offence", "5.0")] == 1 and seen[("Dive", "Offence", "")] == 1
    assert seen[("High leg", "Offence", "5.0")] == 3
    assert seen[("Tackling", "Offence ", "3.0")] == -1  # mvfoul trims it; the evaluator skips it
    assert sum(v == -1 for v in seen.values()) > 10


def test_official_labels_keep_their_other_outputs():
    labels = official_labels("Dive", "Offence", "3.0")
    assert (labels.action_class, labels.offence, labels.severity) == ("Dive", "Offence", "3.0")
    assert (labels.offence_severity, labels.action, labels.severity_match) == (2, 7, 1)
    assert official_labels("Tackling", "Between", "1.0") == "offence 'Between' is undecided"


def test_an_action_class_the_evaluator_cannot_look_up_fails_in_one_line(
    soccernet_evaluate, tmp_path
):
    gt_path = _write_json(
        tmp_path / "gt.json", {"Actions": {"3": _entry("Tackling ", "Offence", "1.0")}}
    )
    pred_path = write_predictions(tmp_path / "pred.json", {"3": (1, 0)})
    with pytest.raises(KeyError):
        soccernet_evaluate(gt_path, pred_path)
    with pytest.raises(DataError) as err:
        evaluate_files(gt_path, pred_path)
    message = str(err.value)
    assert (
        "\n" not in message
        and str(gt_path) in message
        and "'3'" in message
        and "'Action class'" in message
    )
    # Where the evaluator skips the action before looking the class up, so do we.
    _write_json(
        gt_path,
        {
            "Actions": {
                "3": _entry("Tackling ", "Between", "1.0"),
                "4": _entry("Dive", "Offence", "1.0"),
            }
        },
    )
    assert _same(evaluate_files(gt_path, pred_path), soccernet_evaluate(gt_path, pred_path))


# --- files ---------------------------------------------------------------------------------


def test_predictions_round_trip_from_class_indices(soccernet_evaluate, tmp_path):
    rng = random.Random(7)
    ground_truth = _random_ground_truth(rng, spaced=False)
    predictions = {
        int(i) if n % 2 else i: (rng.randrange(4), rng.randrange(8))
        for n, i in enumerate(ground_truth)
    }
    predictions = {k: (np.int64(s), a) for k, (s, a) in predictions.items()}  # argmax outputs
    path = write_predictions(
        tmp_path / "out" / "predictions_test.json", predictions, set_name="test"
    )

    document = read_predictions(path)
    assert list(document) == ["Set", "Actions"] and document["Set"] == "test"
    ids = list(document["Actions"])
    assert ids == sorted(ids, key=int)  # ids as strings, numeric order
    assert document["Actions"] == {
        str(k): prediction_strings(s, a) for k, (s, a) in predictions.items()
    }
    assert prediction_entry(3, 7) == {
        "Action class": "Dive",
        "Offence": "Offence",
        "Severity": "5.0",
    }
    assert prediction_entry(0, 1) == {
        "Action class": "Standing tackling",
        "Offence": "No offence",
        "Severity": "",
    }

    gt_path = _write_json(tmp_path / "gt.json", {"Actions": ground_truth})
    official = soccernet_evaluate(gt_path, path)
    assert _same(official_scores({"Actions": ground_truth}, document), official)
    assert _same(evaluate_files(gt_path, path), official)
    # Without a set name, the file is just {"Actions": ...}: the format of the official README.
    write_predictions(path, predictions)
    assert list(json.loads(path.read_text())) == ["Actions"]


@pytest.mark.parametrize("bad", [(4, 0), (0, 8), (-1, 0), (1.5, 0), ("1", 0), (1,)])
def test_write_predictions_refuses_bad_class_indices(tmp_path, bad):
    with pytest.raises(ValueError, match="'5'"):
        write_predictions(tmp_path / "p.json", {"5": bad})
    assert not (tmp_path / "p.json").exists()


def test_csv_ground_truth_scores_like_its_json(soccernet_or_none, tmp_path):
    rng = random.Random(11)
    ground_truth = _random_ground_truth(rng, spaced=True)
    entries, _ = _random_predictions(rng, ground_truth, odd=False)
    gt_path = _write_json(tmp_path / "annotations.json", {"Actions": ground_truth})
    pred_path = _write_json(tmp_path / "pred.json", {"Actions": entries})
    csv_path = tmp_path / "test.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["severity", "action_id", "clips", "action_class", "offence", "note"])
        for i, e in ground_truth.items():
            writer.writerow(
                [
                    e["Severity"],
                    i,
                    f"Test/action_{i}/clip_0.mp4",
                    e["Action class"],
                    e["Offence"],
                    "x",
                ]
            )

    assert read_ground_truth(csv_path) == {"Actions": ground_truth}  # raw strings, untrimmed
    from_json = evaluate_files(gt_path, pred_path)
    assert _same(evaluate_files(csv_path, pred_path), from_json)
    assert _same(evaluate_files(tmp_path, pred_path), from_json)  # the split folder works too
    if soccernet_or_none is not None:
        assert _same(from_json, soccernet_or_none(gt_path, pred_path))


def test_real_sample_scores_like_the_official(soccernet_evaluate, real_test_split, tmp_path):
    raw = json.loads((real_test_split / "annotations.json").read_text())["Actions"]
    predictions = {i: (k % 4, k % 8) for k, i in enumerate(raw)}
    pred_path = write_predictions(tmp_path / "pred.json", predictions, set_name="test")
    assert _same(
        evaluate_files(real_test_split, pred_path),
        soccernet_evaluate(real_test_split / "annotations.json", pred_path),
    )


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not valid JSON"),
        ("[]", "no 'Actions' object"),
        ('{"Set": "test"}', "no 'Actions' object"),
        ('{"Actions": []}', "no 'Actions' object"),
        ('{"Set": 3, "Actions": {}}', "'Set'"),
        ('{"Actions": {"12": "Offence"}}', "action '12' is str"),
        (
            '{"Actions": {"12": {"Action class": "Dive", "Offence": "Offence"}}}',
            "action '12' lacks the field 'Severity'",
        ),
        (
            '{"Actions": {"12": {"Action class": "Dive", "Offence": null, "Severity": ""}}}',
            "action '12', field 'Offence': None is not a string",
        ),
        (
            '{"Actions": {"12": {"Action class": "Dives", "Offence": "Offence", "Severity": "1.0"}}}',
            "action '12', field 'Action class': 'Dives'",
        ),
        (
            '{"Actions": {"12": {"Action class": "Dive", "Offence": "Offence", "Severity": "1"}}}',
            "action '12', field 'Severity'",
        ),
        (
            '{"Actions": {"12": {"Action class": "Dive", "Offence": "No Offence", "Severity": ""}}}',
            "action '12', field 'Offence'",
        ),
    ],
)
def test_malformed_predictions_fail_in_one_line(tmp_path, content, expected):
    path = tmp_path / "predictions.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_predictions(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and expected in message


def test_lenient_reading_accepts_strings_the_evaluator_merely_counts_wrong(tmp_path):
    path = _write_json(
        tmp_path / "p.json", {"Actions": {"1": _entry("Dont know", "No Offence", "")}}
    )
    assert read_predictions(path, strict=False)["Actions"]["1"]["Offence"] == "No Offence"
    with pytest.raises(DataError, match="missing.json not found"):
        read_predictions(tmp_path / "missing.json")


def test_unlabelled_ground_truth_fails_in_one_line(tmp_path):
    gt_path = _write_json(tmp_path / "gt.json", {"Actions": {"0": {"Clips": []}}})
    pred_path = write_predictions(tmp_path / "p.json", {"0": (0, 0)})
    with pytest.raises(
        DataError, match=r"action '0' lacks the field 'Action class' \(an unlabelled"
    ):
        evaluate_files(gt_path, pred_path)


# --- warnings and the shared formula -------------------------------------------------------


def test_absent_classes_give_nan_and_a_warning_naming_them(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ground_truth = {
        "Actions": {"0": _entry("Tackling", "Offence", "1.0"), "1": _entry("Dive", "", "")}
    }
    scores = official_scores(ground_truth, {"Actions": {"0": prediction_strings(1, 0)}})
    assert scores["accuracy_offence_severity"] == 50.0 and scores["accuracy_action"] == 50.0
    assert all(math.isnan(scores[k]) for k in SCORE_KEYS[2:])
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2
    missing, nan = messages
    assert "1 of 2 ground-truth action(s) have no prediction" in missing and "'1'" in missing
    for name in (
        *OFFENCE_SEVERITY_CLASSES[0:1],
        *OFFENCE_SEVERITY_CLASSES[2:],
        *ACTION_CLASSES[1:7],
    ):
        assert repr(name) in nan
    for present in ("'Offence + No card'", "'Tackling'", "'Dive'"):
        assert present not in nan


def test_all_classes_present_no_warning(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    scores = scores_from_counts([1, 2, 3, 4], [1, 1, 0, 4], [2] * 8, [1] * 8)
    assert scores["balanced_accuracy_offence_severity"] == pytest.approx(
        100 * (1 + 0.5 + 0 + 1) / 4
    )
    assert scores["accuracy_offence_severity"] == pytest.approx(60.0)
    assert scores["leaderboard_value"] == pytest.approx((62.5 + 50) / 2)
    assert not caplog.records
