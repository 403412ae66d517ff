"""Read a split (``annotations.json`` beside ``action_N/clip_K.mp4``) into :class:`Action` records.

Each source (this JSON, or :mod:`mvfoul.data.csv_annotations`) yields :class:`RawAction` records;
:func:`build_actions` alone applies the official label rules and checks the clips on disk.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mvfoul.config import EVALUATION_SPLITS
from mvfoul.errors import DataError
from mvfoul.labels import OfficialLabels, official_labels, vocabulary_problem

logger = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.json"
LABEL_FIELDS = ("Action class", "Offence", "Severity")  # the raw label strings of an entry
_RESTORE = "restore it from the SoccerNet mvfouls download"


@dataclass(frozen=True)
class Action:
    action_id: str  # the key in annotations.json; ids stay strings (predictions are keyed by them)
    clips: tuple[Path, ...]  # view files that exist on disk, in annotation order
    labels: OfficialLabels | None  # None for an unlabelled split


@dataclass(frozen=True)
class RawAction:
    """One listed action as its source states it, before the rules and the disk."""

    action_id: str
    clips: tuple[Path, ...]  # every listed view file, in view order, whether on disk or not
    labels: tuple[str, str, str] | None = None  # raw (action class, offence, severity) strings


@dataclass
class SplitReport:
    """What reading a split kept and what it left out."""

    split_dir: Path  # the split folder read, or the CSV file
    listed_actions: int
    listed_clips: int
    missing_clips: list[Path] = field(default_factory=list)  # listed but absent on disk
    dropped_no_view: list[str] = field(default_factory=list)  # action ids with no view on disk
    dropped_by_rules: dict[str, str] = field(default_factory=dict)  # action id -> reason
    # Of those, the actions whose labels are outside the vocabulary (typos): action id -> the value.
    unknown_labels: dict[str, str] = field(default_factory=dict)

    @property
    def kept_actions(self) -> int:
        return self.listed_actions - len(self.dropped_no_view) - len(self.dropped_by_rules)

    def summary(self) -> str:
        return (
            f"{self.split_dir}: kept {self.kept_actions} of {self.listed_actions} actions "
            f"({len(self.dropped_by_rules)} dropped by the official label rules, "
            f"{len(self.dropped_no_view)} with no view on disk); "
            f"{len(self.missing_clips)} of {self.listed_clips} listed clips missing"
        )


def find_split_dir(data_dir: str | Path, split: str) -> Path:
    """The folder of ``split`` under ``data_dir``, whatever its capitalisation (unpacked copies are
    often lower-cased); two folders differing only in case are refused."""
    wanted = split.lower()
    if wanted not in EVALUATION_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(EVALUATION_SPLITS)}")
    data_dir = Path(data_dir).expanduser()
    expected = wanted.capitalize()
    if not data_dir.is_dir():
        raise DataError(
            f"dataset folder {data_dir} does not exist (expected it to hold a {expected}/ "
            f"folder); set dataset.data_dir to the SoccerNet mvfouls folder"
        )
    entries = sorted(p.name for p in data_dir.iterdir())
    matches = [n for n in entries if n.lower() == wanted and (data_dir / n).is_dir()]
    if len(matches) == 1:
        return data_dir / matches[0]
    if matches:
        raise DataError(
            f"{data_dir} has several folders for the {split!r} split ({', '.join(matches)}); "
            f"keep only one"
        )
    shown = ", ".join(entries[:10]) or "nothing"
    if len(entries) > 10:
        shown += ", ..."
    raise DataError(
        f"no {expected}/ folder (any capitalisation) in {data_dir}; found: {shown}. "
        f"Point dataset.data_dir at the folder holding Train/Valid/Test/Chall"
    )


def build_actions(
    source: Path, raw_actions: Sequence[RawAction], labelled: bool = True
) -> tuple[list[Action], SplitReport]:
    """Actions (in the given order) and the report of ``source`` (split folder or CSV file); with
    ``labelled=False`` labels are ``None`` and no rule applies. Only actions that survive the rules
    are checked on disk."""
    report = SplitReport(source, len(raw_actions), sum(len(raw.clips) for raw in raw_actions))
    actions: list[Action] = []
    for raw in raw_actions:
        labels: OfficialLabels | None = None
        if labelled:
            assert raw.labels is not None, "a labelled read's sources refuse unlabelled actions"
            verdict = official_labels(*raw.labels)
            if isinstance(verdict, str):
                report.dropped_by_rules[raw.action_id] = verdict
                if unknown := vocabulary_problem(*raw.labels):
                    report.unknown_labels[raw.action_id] = unknown
                continue
            labels = verdict
        clips = [clip for clip in raw.clips if clip.is_file()]
        report.missing_clips += [clip for clip in raw.clips if clip not in clips]
        if not clips:
            report.dropped_no_view.append(raw.action_id)
            continue
        actions.append(Action(raw.action_id, tuple(clips), labels))

    # The official rules' own drops ("Dont know", "Between"...) are expected; a typo is not.
    if typos := list(report.unknown_labels.items()):
        shown = "; ".join(f"action {i}: {v}" for i, v in typos[:10])
        more = " ..." if len(typos) > 10 else ""
        logger.warning(
            f"{source}: {len(typos)} action(s) left out for labels outside the SoccerNet "
            f"vocabulary ({shown}{more}); fix the annotations"
        )
    # One line for the whole split: a partial download can miss hundreds of clips.
    if missing := report.missing_clips:
        logger.warning(
            f"{source}: {len(missing)} of {report.listed_clips} listed clips are missing on disk "
            f"(e.g. {missing[0]}); keeping the views that exist, {len(report.dropped_no_view)} "
            f"action(s) left with no view dropped"
        )
    return actions, report


def read_soccernet_split(
    split_dir: Path, labelled: bool = True
) -> tuple[list[Action], SplitReport]:
    """One split folder's actions (in the JSON's order) and report. With ``labelled=False`` (the
    challenge split) a folder without ``annotations.json`` is read from its ``action_*`` folders."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} does not exist; check dataset.data_dir")
    if not labelled and not (split_dir / ANNOTATIONS_FILE).exists():
        return _read_action_folders(split_dir)
    return build_actions(split_dir, read_raw_split(split_dir, labelled), labelled)


def read_raw_split(split_dir: Path, labelled: bool = True) -> list[RawAction]:
    """The actions of ``<split_dir>/annotations.json`` as listed: nothing filtered, labels raw.
    ``labelled`` requires the three label strings; otherwise they are kept where all are there."""
    path = Path(split_dir) / ANNOTATIONS_FILE
    raw_actions = []
    for action_id, entry in load_actions_object(path).items():
        where = f"annotations file {path}: action {action_id!r}"
        clips = entry.get("Clips") if isinstance(entry, dict) else None
        if not isinstance(clips, list) or not all(
            isinstance(c, dict) and isinstance(c.get("Url"), str) for c in clips
        ):
            raise DataError(
                f"{where} needs a 'Clips' list of objects with a 'Url' string; "
                f"restore the file from the SoccerNet mvfouls download"
            )
        missing = [k for k in LABEL_FIELDS if not isinstance(entry.get(k), str)]
        if missing and labelled:
            raise DataError(
                f"{where} lacks the label field(s) {', '.join(map(repr, missing))}; read an "
                f"unlabelled (challenge) split with labelled=False"
            )
        labels = None if missing else (entry["Action class"], entry["Offence"], entry["Severity"])
        paths = tuple(_url_to_path(Path(split_dir), c["Url"]) for c in clips)
        raw_actions.append(RawAction(action_id, paths, labels))
    return raw_actions


def read_json_document(path: Path, kind: str, fix: str, missing_fix: str | None = None) -> Any:
    """The content of a JSON file, or a one-line DataError naming its ``kind`` and the ``fix``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{kind} {path} not found; {missing_fix or fix}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {kind} {path} ({err}); {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{kind} {path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); {fix}"
        ) from None


def load_actions_object(path: Path) -> dict[str, Any]:
    data = read_json_document(path, "annotations file", _RESTORE)
    actions = data.get("Actions") if isinstance(data, dict) else None
    if not isinstance(actions, dict):
        raise DataError(
            f"annotations file {path} has no 'Actions' object (not the SoccerNet-MVFoul "
            f"layout); {_RESTORE}"
        )
    return actions


def _url_to_path(split_dir: Path, url: str) -> Path:
    # "Dataset/action_0/clip_0" -> <split_dir>/action_0/clip_0.mp4: the "Dataset/" prefix names
    # the annotators' layout, not ours. Some URLs were written on Windows, with backslashes.
    path = split_dir.joinpath(*PurePosixPath(url.replace("\\", "/")).parts[-2:])
    return path if path.suffix == ".mp4" else path.with_name(path.name + ".mp4")


def _numbered(folder: Path, pattern: str, kind: Callable[[Path], bool]) -> list[tuple[int, Path]]:
    """(number, entry) of the entries of ``folder`` matching ``pattern``, by number, not name
    (action_10 after action_9)."""
    matches = [(re.match(pattern, path.name), path) for path in folder.iterdir()]
    return sorted((int(match[1]), path) for match, path in matches if match and kind(path))


def _read_action_folders(split_dir: Path) -> tuple[list[Action], SplitReport]:
    """An unlabelled split without annotations: one action per ``action_<n>`` folder, id ``<n>``."""
    folders = _numbered(split_dir, r"action_(\d+)$", Path.is_dir)
    if not folders:
        raise DataError(
            f"{split_dir} has neither {ANNOTATIONS_FILE} nor action_<n> folders; "
            f"check dataset.data_dir"
        )
    raw = [
        RawAction(str(n), tuple(p for _, p in _numbered(folder, r"clip_(\d+)\.mp4$", Path.is_file)))
        for n, folder in folders
    ]
    actions, report = build_actions(split_dir, raw, labelled=False)
    if dropped := report.dropped_no_view:
        logger.warning(
            f"{split_dir}: {len(dropped)} action folder(s) hold no clip_<n>.mp4 (e.g. "
            f"action_{dropped[0]}); dropped"
        )
    return actions, report
