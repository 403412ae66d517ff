"""Read a SoccerNet-MVFoul split folder into a list of :class:`Action`.

The layout is the official one::

    <data_dir>/Train/annotations.json
    <data_dir>/Train/action_0/clip_0.mp4, clip_1.mp4, ...

``annotations.json`` holds ``{"Actions": {"<id>": {"Action class": ..., "Offence": ...,
"Severity": ..., "Clips": [{"Url": "Dataset/action_0/clip_0", ...}, ...]}}}``. Which actions
count, and their class indices, is decided by :func:`mvfoul.labels.official_labels`, so training
and scoring see exactly the actions the official evaluator sees. Nothing is skipped silently:
every dropped action and missing clip lands in the :class:`SplitReport`.

Every annotation source (this JSON, or the CSV of :mod:`mvfoul.data.csv_annotations`) is first
turned into :class:`RawAction` records (id, raw label strings, listed clip paths); one function,
:func:`build_actions`, then applies the rules and checks the clips on disk, so both formats give
identical actions and reports.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mvfoul.config import EVALUATION_SPLITS
from mvfoul.errors import DataError
from mvfoul.labels import OfficialLabels, official_labels, vocabulary_problem

logger = logging.getLogger(__name__)

SPLIT_NAMES = EVALUATION_SPLITS  # declared by the schema (split=...)
ANNOTATIONS_FILE = "annotations.json"
LABEL_FIELDS = ("Action class", "Offence", "Severity")  # the raw label strings of an entry
_ACTION_FOLDER = re.compile(r"^action_(\d+)$")
_CLIP_FILE = re.compile(r"^clip_(\d+)\.mp4$")


@dataclass(frozen=True)
class Action:
    """One incident: its id, the camera views present on disk, and its official labels."""

    action_id: str  # the key in annotations.json; ids stay strings (predictions are keyed by them)
    clips: tuple[Path, ...]  # view files that exist on disk, in annotation order
    labels: OfficialLabels | None  # None for an unlabelled split


@dataclass
class SplitReport:
    """What reading a split kept and what it left out, so nothing is dropped silently."""

    split_dir: Path  # the split folder read, or the CSV file for read_csv_annotations
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
        """One human line with the counts."""
        return (
            f"{self.split_dir}: kept {self.kept_actions} of {self.listed_actions} actions "
            f"({len(self.dropped_by_rules)} dropped by the official label rules, "
            f"{len(self.dropped_no_view)} with no view on disk); "
            f"{len(self.missing_clips)} of {self.listed_clips} listed clips missing"
        )


def find_split_dir(data_dir: str | Path, split: str) -> Path:
    """The folder of ``split`` under ``data_dir``, whatever its capitalisation.

    SoccerNet ships ``Train/Valid/Test/Chall`` but unpacked copies are often lower-cased;
    accepting any case spares users a rename. Two folders differing only in case are ambiguous
    and refused rather than picked at random.
    """
    wanted = split.lower()
    if wanted not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_NAMES)}")
    data_dir = Path(data_dir).expanduser()
    expected = wanted.capitalize()
    if not data_dir.is_dir():
        raise DataError(
            f"dataset folder {data_dir} does not exist (expected it to hold a {expected}/ "
            f"folder); set dataset.data_dir to the SoccerNet mvfouls folder"
        )
    entries = sorted(p.name for p in data_dir.iterdir())
    matches = [data_dir / name for name in entries if name.lower() == wanted]
    matches = [p for p in matches if p.is_dir()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise DataError(
            f"{data_dir} has several folders for the {split!r} split ({names}); keep only one"
        )
    shown = ", ".join(entries[:10]) + (", ..." if len(entries) > 10 else "") or "nothing"
    raise DataError(
        f"no {expected}/ folder (any capitalisation) in {data_dir}; found: {shown}. "
        f"Point dataset.data_dir at the folder holding Train/Valid/Test/Chall"
    )


@dataclass(frozen=True)
class RawAction:
    """One listed action as an annotation source states it, before the rules and the disk.

    Both readers (``annotations.json`` here, CSV in :mod:`mvfoul.data.csv_annotations`) turn
    their file into these and hand them to :func:`build_actions`, so the official rules and the
    missing-clip accounting exist once.
    """

    action_id: str
    clips: tuple[Path, ...]  # every listed view file, in view order, whether on disk or not
    labels: tuple[str, str, str] | None = None  # raw (action class, offence, severity) strings


def build_actions(
    source: Path, raw_actions: Iterable[RawAction], labelled: bool = True
) -> tuple[list[Action], SplitReport]:
    """Apply the official label rules and check clips on disk: actions (in the given order) and a
    report whose ``split_dir`` is ``source`` (the split folder, or the CSV file).

    With ``labelled=True`` an action is dropped (reason in ``dropped_by_rules``) when
    :func:`~mvfoul.labels.official_labels` rejects its raw strings; with ``labelled=False`` labels
    are ``None`` and no rule applies. Only the actions that survive the rules are checked for clips
    on disk: a missing clip of an action dropped anyway changes nothing. Missing clips are counted
    and logged in one warning line; the existing views are kept; an action left without any view
    is dropped and counted.
    """
    raw_actions = list(raw_actions)
    report = SplitReport(
        split_dir=source,
        listed_actions=len(raw_actions),
        listed_clips=sum(len(raw.clips) for raw in raw_actions),
    )
    actions: list[Action] = []
    for raw in raw_actions:
        labels: OfficialLabels | None = None
        if labelled:
            if raw.labels is None:
                raise DataError(
                    f"{source}: action {raw.action_id!r} has no labels; read an unlabelled "
                    f"(challenge) split with labelled=False"
                )
            verdict = official_labels(*raw.labels)
            if isinstance(verdict, str):
                report.dropped_by_rules[raw.action_id] = verdict
                unknown = vocabulary_problem(*raw.labels)
                if unknown:
                    report.unknown_labels[raw.action_id] = unknown
                continue
            labels = verdict
        clips: list[Path] = []
        for clip in raw.clips:
            (clips if clip.is_file() else report.missing_clips).append(clip)
        if not clips:
            report.dropped_no_view.append(raw.action_id)
            continue
        actions.append(Action(action_id=raw.action_id, clips=tuple(clips), labels=labels))

    if report.unknown_labels:
        # The official rules' own drops ("Dont know", "Between"...) are expected and counted in the
        # split's info line; a value outside the vocabulary is a typo someone should fix.
        shown = "; ".join(f"action {i}: {v}" for i, v in list(report.unknown_labels.items())[:10])
        more = " ..." if len(report.unknown_labels) > 10 else ""
        logger.warning(
            "%s: %d action(s) left out for labels outside the SoccerNet vocabulary (%s%s); fix the annotations",
            source,
            len(report.unknown_labels),
            shown,
            more,
        )
    if report.missing_clips:
        # One line for the whole split: a partial download can miss hundreds of clips, and one
        # warning per clip would drown the log.
        logger.warning(
            "%s: %d of %d listed clips are missing on disk (e.g. %s); keeping the views that "
            "exist, %d action(s) left with no view dropped",
            source,
            len(report.missing_clips),
            report.listed_clips,
            report.missing_clips[0],
            len(report.dropped_no_view),
        )
    return actions, report


def read_soccernet_split(
    split_dir: Path, labelled: bool = True
) -> tuple[list[Action], SplitReport]:
    """Read one split folder into actions (in the order of the JSON) and a report.

    With ``labelled=False`` (the challenge split) labels are ``None`` and no label rule applies;
    if such a split has no ``annotations.json`` its ``action_*`` folders are listed instead.
    The rules and the missing-clip accounting are :func:`build_actions`'.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} does not exist; check dataset.data_dir")
    if not labelled and not (split_dir / ANNOTATIONS_FILE).exists():
        return _read_action_folders(split_dir)
    return build_actions(split_dir, read_raw_split(split_dir, labelled), labelled)


def read_raw_split(split_dir: Path, labelled: bool = True) -> list[RawAction]:
    """The actions listed in ``<split_dir>/annotations.json``, in its order, as they stand: clip
    URLs mapped to ``<split_dir>/action_N/clip_K.mp4``, label strings raw, nothing filtered.

    With ``labelled=True`` every action must carry the three label strings (a one-line DataError
    otherwise); with ``labelled=False`` they are kept where all three are present, else ``None``.
    """
    split_dir = Path(split_dir)
    annotations_path = split_dir / ANNOTATIONS_FILE
    raw_actions: list[RawAction] = []
    for action_id, entry in load_actions_object(annotations_path).items():
        urls = _clip_urls(annotations_path, action_id, entry)
        labels = None
        if labelled or _has_label_strings(entry):
            labels = _raw_label_strings(annotations_path, action_id, entry)
        raw_actions.append(
            RawAction(action_id, tuple(_url_to_path(split_dir, url) for url in urls), labels)
        )
    return raw_actions


def _has_label_strings(entry: Any) -> bool:
    return isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in LABEL_FIELDS)


def read_json_document(path: Path, kind: str, fix: str, missing_fix: str | None = None) -> Any:
    """A JSON file's content, or a one-line DataError naming the ``kind`` of file, the problem
    (missing, unreadable, invalid JSON with its position) and the ``fix``."""
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
    """The ``Actions`` object of an annotations file, or a one-line DataError."""
    fix = "restore it from the SoccerNet mvfouls download"
    data = read_json_document(path, "annotations file", fix)
    actions = data.get("Actions") if isinstance(data, dict) else None
    if not isinstance(actions, dict):
        raise DataError(
            f"annotations file {path} has no 'Actions' object (not the SoccerNet-MVFoul "
            f"layout); {fix}"
        )
    return actions


def _clip_urls(path: Path, action_id: str, entry: Any) -> list[str]:
    clips = entry.get("Clips") if isinstance(entry, dict) else None
    if not isinstance(clips, list) or not all(
        isinstance(c, dict) and isinstance(c.get("Url"), str) for c in clips
    ):
        raise DataError(
            f"annotations file {path}: action {action_id!r} needs a 'Clips' list of objects "
            f"with a 'Url' string; restore the file from the SoccerNet mvfouls download"
        )
    return [c["Url"] for c in clips]


def _raw_label_strings(path: Path, action_id: str, entry: dict[str, Any]) -> tuple[str, str, str]:
    missing = [k for k in LABEL_FIELDS if not isinstance(entry.get(k), str)]
    if missing:
        raise DataError(
            f"annotations file {path}: action {action_id!r} lacks the label field(s) "
            f"{', '.join(repr(k) for k in missing)}; read an unlabelled (challenge) split "
            f"with labelled=False"
        )
    return entry["Action class"], entry["Offence"], entry["Severity"]


def _url_to_path(split_dir: Path, url: str) -> Path:
    """``"Dataset/action_0/clip_0"`` -> ``<split_dir>/action_0/clip_0.mp4``.

    Only the last two components count: the ``Dataset/`` prefix names the annotators' layout,
    not ours. Backslashes are accepted because some fields of the JSON were written on Windows.
    """
    parts = PurePosixPath(url.replace("\\", "/")).parts[-2:]
    path = split_dir.joinpath(*parts)
    return path if path.suffix == ".mp4" else path.with_name(path.name + ".mp4")


def _read_action_folders(split_dir: Path) -> tuple[list[Action], SplitReport]:
    """An unlabelled split without annotations: one action per ``action_<n>`` folder.

    Folders and clips are ordered by their number (``action_10`` after ``action_9``), and the
    action id is that number, as the annotation keys of the other splits are.
    """
    folders = []
    for p in split_dir.iterdir():
        match = _ACTION_FOLDER.match(p.name)
        if match and p.is_dir():
            folders.append((int(match.group(1)), p))
    folders.sort()
    actions: list[Action] = []
    dropped: list[str] = []
    listed_clips = 0
    for number, folder in folders:
        clips = sorted(
            (int(m.group(1)), p)
            for p in folder.iterdir()
            if (m := _CLIP_FILE.match(p.name)) and p.is_file()
        )
        listed_clips += len(clips)
        if clips:
            actions.append(Action(str(number), tuple(p for _, p in clips), None))
        else:
            dropped.append(str(number))
    if not folders:
        raise DataError(
            f"{split_dir} has neither {ANNOTATIONS_FILE} nor action_<n> folders; "
            f"check dataset.data_dir"
        )
    if dropped:
        logger.warning(
            "%s: %d action folder(s) hold no clip_<n>.mp4 (e.g. action_%s); dropped",
            split_dir,
            len(dropped),
            dropped[0],
        )
    report = SplitReport(
        split_dir=split_dir,
        listed_actions=len(folders),
        listed_clips=listed_clips,
        dropped_no_view=dropped,
    )
    return actions, report
