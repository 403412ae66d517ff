"""The SoccerNet split reader: official label rules, missing clips, split folders, bad files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mvfoul.data.annotations import find_split_dir, read_soccernet_split
from mvfoul.errors import DataError
from mvfoul.labels import official_labels

LOGGER = "mvfoul.data.annotations"


def _write_split(split_dir: Path, actions: dict[str, dict], make_clips: bool = True) -> Path:
    """A SoccerNet-layout split: annotations.json plus (optionally) one tiny file per clip URL.

    The reader only checks that clip files exist, so their content does not matter here.
    """
    split_dir.mkdir(parents=True, exist_ok=True)
    for action_id, entry in actions.items():
        entry.setdefault("Clips", [{"Url": f"Dataset/action_{action_id}/clip_0"}])
        if make_clips:
            for clip in entry["Clips"]:
                path = split_dir / f"action_{action_id}" / (clip["Url"].split("/")[-1] + ".mp4")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x")
    (split_dir / "annotations.json").write_text(json.dumps({"Actions": actions}))
    return split_dir


def _labels(action_class: str, offence: str, severity: str) -> dict[str, str]:
    return {"Action class": action_class, "Offence": offence, "Severity": severity}


# --- the real fixture ----------------------------------------------------------------------


def test_real_split_reads_five_actions_with_official_labels(real_test_split, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    actions, report = read_soccernet_split(real_test_split)

    raw = json.loads((real_test_split / "annotations.json").read_text())["Actions"]
    assert [a.action_id for a in actions] == list(raw)  # the JSON's order, ids as strings
    assert all(isinstance(a.action_id, str) for a in actions)
    assert len(actions) == 5
    for action in actions:
        entry = raw[action.action_id]
        expected = official_labels(entry["Action class"], entry["Offence"], entry["Severity"])
        assert action.labels == expected
    # Spot-check one mapping by hand: action 3 is a High leg with a red card.
    assert actions[3].labels.action_class == "High leg"
    assert (actions[3].labels.offence_severity, actions[3].labels.action) == (3, 2)

    assert report.listed_actions == 5
    assert report.listed_clips == 15
    assert report.missing_clips == [real_test_split / "action_4" / "clip_2.mp4"]
    assert report.dropped_no_view == [] and report.dropped_by_rules == {}
    assert "kept 5 of 5 actions" in report.summary()
    assert "1 of 15 listed clips missing" in report.summary()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "1 of 15 listed clips are missing" in warnings[0].getMessage()
    assert "clip_2.mp4" in warnings[0].getMessage()


def test_real_split_keeps_existing_views_in_annotation_order(real_test_split):
    actions, _ = read_soccernet_split(real_test_split)
    by_id = {a.action_id: a for a in actions}
    assert [p.name for p in by_id["4"].clips] == ["clip_0.mp4", "clip_1.mp4", "clip_3.mp4"]
    assert [len(a.clips) for a in actions] == [3, 3, 3, 2, 3]
    assert all(p.is_file() for a in actions for p in a.clips)


def test_real_split_unlabelled_has_no_labels(real_test_split):
    actions, report = read_soccernet_split(real_test_split, labelled=False)
    assert len(actions) == 5 and all(a.labels is None for a in actions)
    assert len(report.missing_clips) == 1


# --- the official rules on hand-written annotations ----------------------------------------


def test_official_rules_drop_and_map(tmp_path):
    cases = {
        # id: (raw labels, expected (offence_severity, action) or None when dropped)
        "0": (_labels("Dont know", "Offence", "3.0"), None),
        "1": (_labels("", "Offence", "3.0"), None),
        "2": (_labels("Tackling", "Between", "3.0"), None),
        "3": (_labels("Tackling", "", "3.0"), None),
        "4": (_labels("Dive", "", ""), (1, 7)),  # a Dive survives an empty offence -> class 1
        "5": (_labels("Dive", "Between", "2.0"), (1, 7)),
        "6": (_labels("Holding", "Offence", "2.0"), None),
        "7": (_labels("Holding", "Offence", "4.0"), None),
        "8": (_labels("Holding", "Offence", ""), None),
        "9": (_labels("Pushing", "No offence", ""), (0, 4)),  # No offence needs no severity
        "10": (_labels("Pushing", "No Offence", "2.0"), (0, 4)),  # both capitalisations
        "11": (_labels("Elbowing", "Offence", "1.0"), (1, 5)),
        "12": (_labels("Challenge", "Offence", "3.0"), (2, 6)),
        "13": (_labels("High leg", "Offence", "5.0"), (3, 2)),
    }
    split = _write_split(tmp_path / "Train", {k: dict(v[0]) for k, v in cases.items()})

    actions, report = read_soccernet_split(split)

    kept = {a.action_id: (a.labels.offence_severity, a.labels.action) for a in actions}
    assert kept == {k: v[1] for k, v in cases.items() if v[1] is not None}
    assert set(report.dropped_by_rules) == {k for k, v in cases.items() if v[1] is None}
    assert "Dont know" in report.dropped_by_rules["0"]
    assert "Between" in report.dropped_by_rules["2"]
    assert "2.0" in report.dropped_by_rules["6"]
    assert report.listed_actions == len(cases)
    assert report.kept_actions == len(kept)


def test_action_without_any_view_on_disk_is_dropped_and_counted(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    split = _write_split(
        tmp_path / "Valid",
        {
            "0": _labels("Tackling", "Offence", "1.0"),
            "1": {
                **_labels("Holding", "Offence", "3.0"),
                "Clips": [{"Url": "Dataset/action_1/clip_0"}, {"Url": "Dataset/action_1/clip_1"}],
            },
        },
    )
    for clip in (split / "action_1").iterdir():
        clip.unlink()

    actions, report = read_soccernet_split(split)

    assert [a.action_id for a in actions] == ["0"]
    assert report.dropped_no_view == ["1"]
    assert len(report.missing_clips) == 2
    assert "1 with no view on disk" in report.summary()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and "2 of 3 listed clips are missing" in messages[0]


def test_missing_label_field_in_labelled_split_is_a_data_error(tmp_path):
    no_severity = {"Action class": "Tackling", "Offence": "Offence"}
    split = _write_split(tmp_path / "Test", {"0": no_severity})
    with pytest.raises(DataError, match="Severity") as info:
        read_soccernet_split(split)
    assert str(split / "annotations.json") in str(info.value)
    # The same file is fine as an unlabelled split.
    actions, _ = read_soccernet_split(split, labelled=False)
    assert actions[0].labels is None


def test_unlabelled_split_without_json_lists_action_folders(tmp_path, caplog):
    split = tmp_path / "Chall"
    layout = {"action_10": ["clip_1", "clip_0"], "action_2": ["clip_0"], "action_3": []}
    for folder, clips in layout.items():
        (split / folder).mkdir(parents=True)
        for clip in clips:
            (split / folder / f"{clip}.mp4").write_bytes(b"x")
    (split / "notes.txt").write_text("not an action")

    actions, report = read_soccernet_split(split, labelled=False)

    assert [a.action_id for a in actions] == ["2", "10"]  # numeric order, not string order
    assert [p.name for p in actions[1].clips] == ["clip_0.mp4", "clip_1.mp4"]
    assert all(a.labels is None for a in actions)
    assert report.dropped_no_view == ["3"] and report.listed_actions == 3
    assert any("hold no clip" in r.getMessage() for r in caplog.records)


# --- split folders and bad files -----------------------------------------------------------


@pytest.mark.parametrize("folder", ["Train", "train", "TRAIN", "tRaIn"])
def test_split_folder_found_in_any_case(tmp_path, folder):
    (tmp_path / folder).mkdir()
    assert find_split_dir(tmp_path, "train") == tmp_path / folder
    assert find_split_dir(str(tmp_path), "Train") == tmp_path / folder


def test_missing_split_folder_names_data_dir_and_what_is_there(tmp_path):
    (tmp_path / "Train").mkdir()
    (tmp_path / "Test").mkdir()
    with pytest.raises(DataError) as info:
        find_split_dir(tmp_path, "valid")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "Valid/" in message
    assert "Test, Train" in message  # what was found instead


def test_missing_data_dir_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_split_dir(tmp_path / "nowhere", "test")


def test_malformed_json_names_the_file(tmp_path):
    split = tmp_path / "Train"
    split.mkdir()
    (split / "annotations.json").write_text('{"Actions": {"0": ')
    with pytest.raises(DataError) as info:
        read_soccernet_split(split)
    message = str(info.value)
    assert str(split / "annotations.json") in message and "not valid JSON" in message
    assert "\n" not in message


def test_missing_annotations_of_labelled_split_names_the_file(tmp_path):
    split = tmp_path / "Train"
    split.mkdir()
    with pytest.raises(DataError, match="not found") as info:
        read_soccernet_split(split)
    assert str(split / "annotations.json") in str(info.value)


def test_json_without_actions_object_is_a_data_error(tmp_path):
    split = tmp_path / "Train"
    split.mkdir()
    (split / "annotations.json").write_text(json.dumps({"Set": "train"}))
    with pytest.raises(DataError, match="'Actions'"):
        read_soccernet_split(split)


def test_a_label_outside_the_vocabulary_is_a_warning_naming_the_action_and_the_value(
    tmp_path, caplog
):
    split = _write_split(
        tmp_path / "Train",
        {
            "0": _labels("Tackling", "Offence", "1.0"),
            "1": _labels("Tacklin", "Offence", "1.0"),  # a typo
            "2": _labels("Holding", "Offense", "3.0"),  # a typo
            "3": _labels("Pushing", "Offence", "6.0"),  # no such severity
            "4": _labels("Dont know", "Offence", "1.0"),  # the official rules' own drops: info only
            "5": _labels("Elbowing", "Between", "3.0"),
        },
    )
    caplog.set_level(logging.INFO, logger=LOGGER)
    actions, report = read_soccernet_split(split)
    assert [a.action_id for a in actions] == ["0"]
    assert report.unknown_labels == {
        "1": "action class 'Tacklin'",
        "2": "offence 'Offense'",
        "3": "severity '6.0'",
    }
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert "3 action(s) left out for labels outside the SoccerNet vocabulary" in message
    for part in (
        "action 1: action class 'Tacklin'",
        "action 2: offence 'Offense'",
        "action 3: severity '6.0'",
    ):
        assert part in message
    assert "Dont know" not in message and "Between" not in message
    assert len(report.dropped_by_rules) == 5  # every drop still counted in the split's info line
