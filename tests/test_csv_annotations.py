"""CSV annotations: the schema, the same semantics as annotations.json, bad files, the converter."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import REAL_SAMPLE
from mvfoul.data.annotations import SplitReport, read_soccernet_split
from mvfoul.data.csv_annotations import csv_to_split, main, read_csv_annotations, split_to_csv
from mvfoul.errors import DataError

LOGGER = "mvfoul.data.annotations"
HEADER = "action_id,clips,action_class,offence,severity\n"


def _counts(report: SplitReport) -> dict:
    """Everything a report says except where it was read from."""
    fields = asdict(report)
    fields.pop("split_dir")
    return {**fields, "kept_actions": report.kept_actions}


def _relative(actions, root: Path) -> list[tuple]:
    return [(a.action_id, tuple(p.relative_to(root) for p in a.clips), a.labels) for a in actions]


def _mirror(split: Path, data_dir: Path) -> Path:
    """``data_dir/<split name>/action_N/clip_K.mp4`` linked to the real clips (no annotations)."""
    for clip in split.glob("action_*/clip_*.mp4"):
        target = data_dir / split.name / clip.parent.name / clip.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(clip)
    return data_dir


def _clips(data_dir: Path, action_id: str, n: int = 2, split: str = "Train") -> str:
    """A ``clips`` cell for ``n`` views, creating the (tiny, content-free) files on disk."""
    paths = [f"{split}/action_{action_id}/clip_{k}.mp4" for k in range(n)]
    for rel in paths:
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / rel).write_bytes(b"x")
    return ";".join(paths)


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _error(csv_path: Path, data_dir: Path, labelled: bool = True) -> str:
    with pytest.raises(DataError) as info:
        read_csv_annotations(csv_path, data_dir, labelled=labelled)
    message = str(info.value)
    assert "\n" not in message
    assert str(csv_path) in message
    return message


def _converter(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "mvfoul.data.csv_annotations", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- round trips on the real fixture -------------------------------------------------------


def test_real_split_to_csv_reads_back_identically(real_test_split, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    out = tmp_path / "test.csv"
    assert split_to_csv(real_test_split, out) == (5, 15, 1)

    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER.strip()
    assert lines[5].startswith(
        "4,Test/action_4/clip_0.mp4;Test/action_4/clip_1.mp4;Test/action_4/clip_2.mp4;"
    )  # the missing clip stays listed: the reader counts it

    json_actions, json_report = read_soccernet_split(real_test_split)
    csv_actions, csv_report = read_csv_annotations(out, REAL_SAMPLE)

    assert csv_actions == json_actions  # ids, clip paths (only those on disk), official labels
    assert _counts(csv_report) == _counts(json_report)
    assert csv_report.missing_clips == [real_test_split / "action_4" / "clip_2.mp4"]
    assert csv_report.split_dir == out
    assert "kept 5 of 5 actions" in csv_report.summary()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per reader, the same line
    assert all("1 of 15 listed clips are missing" in w for w in warnings)


def test_real_csv_to_json_reads_back_identically(real_test_split, tmp_path):
    data_dir = _mirror(real_test_split, tmp_path / "data")
    csv_path = tmp_path / "test.csv"
    split_to_csv(real_test_split, csv_path)

    assert csv_to_split(csv_path, data_dir, data_dir / "Test") == (5, 15, 1)

    written = json.loads((data_dir / "Test" / "annotations.json").read_text())
    original = json.loads((real_test_split / "annotations.json").read_text())
    assert written["Set"] == "test" and written["Number of actions"] == 5
    assert list(written["Actions"]) == list(original["Actions"])
    for action_id, entry in written["Actions"].items():
        source = original["Actions"][action_id]
        for key in ("Action class", "Offence", "Severity"):
            assert entry[key] == source[key]
        assert [c["Url"] for c in entry["Clips"]] == [c["Url"] for c in source["Clips"]]

    original_actions, original_report = read_soccernet_split(real_test_split)
    json_actions, json_report = read_soccernet_split(data_dir / "Test")
    csv_actions, csv_report = read_csv_annotations(csv_path, data_dir)
    assert json_actions == csv_actions
    assert _relative(json_actions, data_dir) == _relative(original_actions, REAL_SAMPLE)
    assert _counts(json_report)["missing_clips"] == [data_dir / "Test" / "action_4" / "clip_2.mp4"]
    for report in (json_report, csv_report):
        assert len(report.missing_clips) == 1
        assert report.listed_clips == original_report.listed_clips == 15
        assert report.kept_actions == original_report.kept_actions == 5


# --- the converter as a user runs it -------------------------------------------------------


def test_converter_commands_write_files_and_one_line(real_test_split, tmp_path, capsys):
    data_dir = _mirror(real_test_split, tmp_path / "data")
    csv_path = tmp_path / "out" / "test.csv"

    done = _converter("to-csv", real_test_split, csv_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.count("\n") == 1
    assert done.stdout.startswith(f"wrote 5 rows to {csv_path}")
    assert "15 clips, 1 missing on disk" in done.stdout
    assert csv_path.read_text(encoding="utf-8").startswith(HEADER)

    done = _converter("to-json", csv_path, data_dir, data_dir / "Test", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"wrote 5 actions to {data_dir / 'Test' / 'annotations.json'} (from {csv_path}; "
        f"15 clips, 1 missing on disk (kept: counted when read))\n"
    )
    actions, _ = read_soccernet_split(data_dir / "Test")
    assert [a.action_id for a in actions] == ["0", "1", "2", "3", "4"]

    # Existing output is not overwritten silently (in-process from here: same code path).
    assert main(["to-json", str(csv_path), str(data_dir), str(data_dir / "Test")]) == 2
    assert capsys.readouterr().err == (
        f"mvfoul: error: {data_dir / 'Test' / 'annotations.json'} already exists; "
        f"pass --force to overwrite it\n"
    )
    assert main(["to-json", str(csv_path), str(data_dir), str(data_dir / "Test"), "--force"]) == 0
    assert capsys.readouterr().out.startswith("wrote 5 actions to ")


def test_converter_refuses_a_csv_the_json_layout_cannot_express(tmp_path):
    data_dir = tmp_path / "data"
    cell = _clips(data_dir, "0") + ";Train/extra/replay.mp4"
    csv_path = _csv(tmp_path / "a.csv", f"{HEADER}0,{cell},Tackling,Offence,1.0\n")

    done = _converter("to-json", csv_path, data_dir, data_dir / "Train", cwd=tmp_path)

    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mvfoul: error: ")
    assert "row 1 (line 2)" in lines[0] and "clip 3" in lines[0]
    assert "'Train/extra/replay.mp4' is not 'Train/action_<n>/clip_<k>.mp4'" in lines[0]
    assert not (data_dir / "Train" / "annotations.json").exists()

    # Another split folder than the one the paths lead to: the same refusal.
    other = _csv(tmp_path / "b.csv", f"{HEADER}0,{_clips(data_dir, '0')},,,\n")
    with pytest.raises(DataError, match="is not 'Valid/action_<n>/clip_<k>.mp4'"):
        csv_to_split(other, data_dir, data_dir / "Valid")
    with pytest.raises(DataError, match="is not inside"):
        csv_to_split(other, data_dir, tmp_path / "elsewhere" / "Train")


def test_converter_usage_and_data_errors_are_one_line(tmp_path, capsys):
    done = _converter("to-csv", tmp_path / "nowhere", tmp_path / "x.csv", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"mvfoul: error: split folder {tmp_path / 'nowhere'} does not exist; "
        f"give a folder like data/Train\n"
    )

    for args in ([], ["to-csv"], ["to-json", "a.csv"], ["fly"], ["to-csv", "a", "b", "--forse"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("mvfoul: error: ") and err.count("\n") == 1, err
        assert "--help`" in err

    bad = _csv(tmp_path / "bad.csv", f"{HEADER}0,Train/action_0/clip_0.mp4,Tackling,Ofence,1.0\n")
    assert main(["to-json", str(bad), str(tmp_path), str(tmp_path / "Train")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mvfoul: error: CSV annotations ") and err.count("\n") == 1
    assert "row 1 (line 2), column 'offence': 'Ofence' is not an allowed value" in err
    assert "did you mean 'Offence'?" in err


def test_unlabelled_split_converts_without_label_columns(tmp_path):
    split = tmp_path / "data" / "Chall"
    (split / "action_0").mkdir(parents=True)
    (split / "action_0" / "clip_0.mp4").write_bytes(b"x")
    (split / "annotations.json").write_text(
        json.dumps({"Actions": {"0": {"Clips": [{"Url": "Dataset/action_0/clip_0"}]}}})
    )
    out = tmp_path / "chall.csv"
    split_to_csv(split, out)
    assert out.read_text() == "action_id,clips\n0,Chall/action_0/clip_0.mp4\n"
    actions, _ = read_csv_annotations(out, tmp_path / "data", labelled=False)
    assert actions == read_soccernet_split(split, labelled=False)[0]

    (split / "annotations.json").unlink()
    csv_to_split(out, tmp_path / "data", split)
    written = json.loads((split / "annotations.json").read_text())
    assert written["Actions"] == {"0": {"Clips": [{"Url": "Dataset/action_0/clip_0"}]}}


def test_to_csv_refuses_a_json_label_outside_the_vocabulary(tmp_path):
    split = tmp_path / "Train"
    split.mkdir()
    entry = {
        "Action class": "Tackle",
        "Offence": "Offence",
        "Severity": "1.0",
        "Clips": [{"Url": "Dataset/action_0/clip_0"}],
    }
    (split / "annotations.json").write_text(json.dumps({"Actions": {"0": entry}}))
    with pytest.raises(DataError) as info:
        split_to_csv(split, tmp_path / "x.csv")
    assert "action '0', action_class: 'Tackle' is not an allowed value" in str(info.value)
    assert not (tmp_path / "x.csv").exists()


# --- the official rules, identical to the JSON reader --------------------------------------


def test_rules_apply_to_hand_written_rows_as_to_json(tmp_path):
    cases = {
        # id: (action class, offence, severity) -> (offence_severity, action) or None (dropped)
        "0": (("Dont know", "Offence", "3.0"), None),
        "1": (("Tackling", "Between", "3.0"), None),
        "2": (("Dive", "", ""), (1, 7)),  # a Dive survives an empty offence: Offence + 1.0
        "3": (("Holding", "Offence", "2.0"), None),
        "4": (("Pushing", "No Offence", "2.0"), (0, 4)),
        "5": (("Challenge", "Offence", "3.0"), (2, 6)),
        "6": (("High leg", "Offence", "5.0"), (3, 2)),
        "7": (("", "", ""), None),
        "8": ((" Elbowing", "Offence ", "1.0"), (1, 5)),  # spaces trimmed, as the rules do
    }
    data_dir = tmp_path / "data"
    rows = [HEADER]
    for action_id, (labels, _) in cases.items():
        rows.append(f"{action_id},{_clips(data_dir, action_id)},{','.join(labels)}\n")
    csv_path = _csv(tmp_path / "train.csv", "".join(rows))
    json_entries = {
        k: {
            "Action class": a,
            "Offence": o,
            "Severity": s,
            "Clips": [{"Url": f"Dataset/action_{k}/clip_0"}, {"Url": f"Dataset/action_{k}/clip_1"}],
        }
        for k, ((a, o, s), _) in cases.items()
    }
    (data_dir / "Train" / "annotations.json").write_text(json.dumps({"Actions": json_entries}))

    actions, report = read_csv_annotations(csv_path, data_dir)
    json_actions, json_report = read_soccernet_split(data_dir / "Train")

    kept = {a.action_id: (a.labels.offence_severity, a.labels.action) for a in actions}
    assert kept == {k: v for k, (_, v) in cases.items() if v is not None}
    assert actions == json_actions
    assert report.dropped_by_rules == json_report.dropped_by_rules
    assert "Dont know" in report.dropped_by_rules["0"]
    assert "Between" in report.dropped_by_rules["1"]
    assert "2.0" in report.dropped_by_rules["3"]
    assert actions[0].labels.offence == "Offence" and actions[0].labels.severity == "1.0"  # Dive
    assert report.kept_actions == 5 and report.listed_clips == 18


def test_extra_columns_are_ignored_and_column_order_is_free(tmp_path):
    data_dir = tmp_path / "data"
    text = (
        "severity,notes,clips,offence,action_id,action_class,source\n"
        f'1.0,"late, from behind",{_clips(data_dir, "7", 3)},Offence,7,Standing tackling,me\n'
    )
    actions, report = read_csv_annotations(_csv(tmp_path / "a.csv", text), data_dir)
    assert [a.action_id for a in actions] == ["7"]
    assert [p.name for p in actions[0].clips] == ["clip_0.mp4", "clip_1.mp4", "clip_2.mp4"]
    assert (actions[0].labels.action_class, actions[0].labels.offence_severity) == (
        "Standing tackling",
        1,
    )
    assert report.listed_actions == 1


def test_unlabelled_csv_with_label_columns_empty_or_omitted(tmp_path):
    data_dir = tmp_path / "data"
    omitted = _csv(tmp_path / "a.csv", f"action_id,clips\n0,{_clips(data_dir, '0')}\n")
    empty = _csv(tmp_path / "b.csv", f"{HEADER}0,{_clips(data_dir, '0')},,,\n")
    for path in (omitted, empty):
        actions, report = read_csv_annotations(path, data_dir, labelled=False)
        assert [(a.action_id, a.labels) for a in actions] == [("0", None)]
        assert report.dropped_by_rules == {}

    message = _error(omitted, data_dir)  # labelled by default: the label columns are required
    assert "missing required column(s) 'action_class', 'offence', 'severity'" in message
    assert "columns found: 'action_id', 'clips'" in message and "labelled=False" in message
    # Empty labels in a labelled read are raw empty strings: the rules drop the action.
    actions, report = read_csv_annotations(empty, data_dir)
    assert actions == [] and list(report.dropped_by_rules) == ["0"]


def test_missing_clips_are_counted_not_errors(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    data_dir = tmp_path / "data"
    text = (
        f"{HEADER}0,{_clips(data_dir, '0')};Train/action_0/clip_9.mp4,Tackling,Offence,1.0\n"
        f"1,Train/action_1/clip_0.mp4;Train/action_1/clip_1.mp4,Holding,Offence,3.0\n"
        # blank line, Windows separators and a byte-order mark are accepted
        f"\n2,Train\\action_2\\clip_0.mp4,Pushing,No offence,\n"
    )
    (data_dir / "Train" / "action_2").mkdir(parents=True)
    (data_dir / "Train" / "action_2" / "clip_0.mp4").write_bytes(b"x")
    csv_path = tmp_path / "a.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + text.encode())

    actions, report = read_csv_annotations(csv_path, data_dir)

    assert [(a.action_id, len(a.clips)) for a in actions] == [("0", 2), ("2", 1)]
    assert actions[1].clips == (data_dir / "Train" / "action_2" / "clip_0.mp4",)
    assert report.dropped_no_view == ["1"] and len(report.missing_clips) == 3
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and "3 of 6 listed clips are missing" in messages[0]
    assert "1 action(s) left with no view dropped" in messages[0]


# --- bad files: one line naming the file, the row, the column and the value ----------------


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        pytest.param(
            "0,Train/a.mp4,Tackle,Offence,1.0\n",
            [
                "row 1 (line 2), column 'action_class': 'Tackle' is not an allowed value",
                "'Tackling', 'Standing tackling'",
                "'Dont know', '' (empty)",
                "did you mean 'Tackling'?",
            ],
            id="action-class",
        ),
        pytest.param(
            "0,Train/a.mp4,Tackling,Offence,1.0\n\n1,Train/b.mp4,Tackling,yes,1.0\n",
            [
                "row 2 (line 4), column 'offence': 'yes' is not an allowed value",
                "(allowed: 'Offence', 'No offence', 'No Offence', 'Between', '' (empty))",
            ],
            id="offence",
        ),
        pytest.param(
            "0,Train/a.mp4,Tackling,Offence,3\n",
            [
                "row 1 (line 2), column 'severity': '3' is not an allowed value",
                "(allowed: '' (empty), '1.0', '2.0', '3.0', '4.0', '5.0')",
            ],
            id="severity",
        ),
        pytest.param(
            "5,Train/a.mp4,Tackling,Offence,1.0\n6,Train/b.mp4,Dive,,\n5,Train/c.mp4,Dive,,\n",
            ["row 3 (line 4), column 'action_id': '5' is already used by row 1 (line 2)"],
            id="duplicate-id",
        ),
        pytest.param(
            "0, ,Tackling,Offence,1.0\n",
            ["row 1 (line 2), column 'clips': empty", "separated by ';'"],
            id="empty-clips",
        ),
        pytest.param(
            "0,Train/a.mp4;;Train/b.mp4,Tackling,Offence,1.0\n",
            ["row 1 (line 2), column 'clips', clip 2: an empty path"],
            id="empty-clip-item",
        ),
        pytest.param(
            "0,Train/a.mp4;/data/Train/b.mp4,Tackling,Offence,1.0\n",
            ["row 1 (line 2), column 'clips', clip 2: '/data/Train/b.mp4' is absolute"],
            id="absolute",
        ),
        pytest.param(
            "0,C:\\data\\b.mp4,Tackling,Offence,1.0\n",
            ["row 1 (line 2), column 'clips', clip 1: 'C:/data/b.mp4' is absolute"],
            id="windows-absolute",
        ),
        pytest.param(
            "0,../other/Train/a.mp4,Tackling,Offence,1.0\n",
            ["row 1 (line 2), column 'clips', clip 1: '../other/Train/a.mp4' contains '..'"],
            id="escapes",
        ),
        pytest.param(
            "\n0,,\n",
            ["row 1 (line 3): 3 cells where the header has 5"],
            id="cell-count",
        ),
        pytest.param(
            None,  # no header at all: only blank lines
            [
                "is empty; expected a header line (action_id, clips, action_class, offence, severity)"
            ],
            id="empty-file",
        ),
    ],
)
def test_bad_csv_fails_in_one_line_naming_row_column_and_value(tmp_path, body, fragments):
    text = "\n\n" if body is None else HEADER + body
    message = _error(_csv(tmp_path / "bad.csv", text), tmp_path)
    for fragment in fragments:
        assert fragment in message


def test_missing_required_column_names_it_and_the_columns_found(tmp_path):
    path = _csv(
        tmp_path / "a.csv", "action_id,clip,action_class,offence,severity\n0,x.mp4,Dive,,\n"
    )
    message = _error(path, tmp_path)
    assert "missing required column(s) 'clips'" in message
    assert "columns found: 'action_id', 'clip', 'action_class', 'offence', 'severity'" in message

    semicolons = _csv(tmp_path / "b.csv", "action_id;clips;action_class;offence;severity\n")
    assert "columns must be separated by ','" in _error(semicolons, tmp_path)


def test_unreadable_or_badly_encoded_file(tmp_path):
    assert "not found" in _error(tmp_path / "absent.csv", tmp_path)
    assert "is a folder" in _error(tmp_path, tmp_path)

    latin1 = tmp_path / "latin1.csv"
    text = HEADER + "0,Train/a.mp4,Tackling,Offence,1.0\n1,Train/é.mp4,Dive,,\n"
    latin1.write_bytes(text.encode("latin-1"))
    message = _error(latin1, tmp_path)
    assert "not UTF-8 (byte 0xe9 on line 3); save it as UTF-8" in message

    broken = _csv(tmp_path / "quote.csv", HEADER + '0,"Train/a.mp4"x,Dive,,\n')
    assert "line 2: not valid CSV" in _error(broken, tmp_path)


def test_missing_data_dir_is_an_error_not_every_clip_missing(tmp_path):
    path = _csv(tmp_path / "a.csv", f"{HEADER}0,Train/action_0/clip_0.mp4,Dive,,\n")
    with pytest.raises(DataError, match="dataset folder .*nowhere does not exist"):
        read_csv_annotations(path, tmp_path / "nowhere")
