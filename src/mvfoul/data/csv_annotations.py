"""CSV annotations: the same actions as ``annotations.json``, one row per action.

Schema
------

A UTF-8 CSV file (comma-separated, standard double-quote quoting; a UTF-8 byte-order mark is
accepted). The first line is the header; **column order is free, and extra columns are allowed
and ignored** (keep notes, sources or scores beside the labels).

=================  =========================================================================
column             content
=================  =========================================================================
``action_id``      the action's id, a string: the key it has (or would have) in
                   ``annotations.json``, e.g. ``0`` or ``1342``. Predictions are keyed by it.
                   Required, non-empty, unique in the file.
``clips``          the action's camera views, in view order, as paths **relative to**
                   ``dataset.data_dir``, separated by ``;``, e.g.
                   ``Train/action_0/clip_0.mp4;Train/action_0/clip_1.mp4``. Required and
                   non-empty; a path may not be absolute nor contain ``..``; ``\\`` is read as
                   ``/``. A listed clip missing on disk is not an error: it is counted and
                   reported (one warning line), the action keeps its other views, and an action
                   left without any view is dropped and counted.
``action_class``   the raw ``Action class`` string of ``annotations.json``: one of
                   ``Tackling``, ``Standing tackling``, ``High leg``, ``Holding``, ``Pushing``,
                   ``Elbowing``, ``Challenge``, ``Dive``, ``Dont know``, or empty.
``offence``        the raw ``Offence`` string: ``Offence``, ``No offence``, ``No Offence``,
                   ``Between``, or empty.
``severity``       the raw ``Severity`` string: ``1.0``, ``2.0``, ``3.0``, ``4.0``, ``5.0``, or
                   empty.
=================  =========================================================================

The three label columns hold the **raw** annotation strings, not the training classes, so the
official rules (:func:`mvfoul.labels.official_labels`) apply exactly as they do to the JSON:
e.g. a ``Between`` offence or a ``Dont know`` class drops the action (counted in the report), a
``Dive`` with an empty offence counts as ``Offence`` + ``1.0``. A value outside the lists above is
a typo and fails (it is never silently dropped); values are compared after trimming surrounding
spaces, as the rules do. Unlabelled (challenge) files may leave the three label columns empty or
omit them; read them with ``labelled=False``. Blank lines are skipped.

Example::

    action_id,clips,action_class,offence,severity
    0,Train/action_0/clip_0.mp4;Train/action_0/clip_1.mp4,Standing tackling,Offence,1.0
    1,Train/action_1/clip_0.mp4;Train/action_1/clip_1.mp4,Dive,,

Errors name the file, the data row (1-based, the header not counted) and its line in the file,
the column, the bad value and what is allowed, in one line.

Converter
---------

``python -m mvfoul.data.csv_annotations to-csv SPLIT_DIR OUT.csv`` writes every action listed in
``SPLIT_DIR/annotations.json`` (unfiltered, raw strings, JSON order; clip paths relative to
SPLIT_DIR's parent, the data_dir). ``python -m mvfoul.data.csv_annotations to-json CSV DATA_DIR
OUT_SPLIT_DIR`` writes ``OUT_SPLIT_DIR/annotations.json`` in the SoccerNet layout; every clip
path must then be ``<OUT_SPLIT_DIR relative to DATA_DIR>/action_<n>/clip_<k>.mp4``. Neither
overwrites an existing file without ``--force``. Only the columns above are carried: the other
fields of ``annotations.json`` (contact, body part, camera type, replay speed...) are not.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from mvfoul import atomic
from mvfoul.data.annotations import (
    ANNOTATIONS_FILE,
    LABEL_FIELDS,
    Action,
    RawAction,
    SplitReport,
    build_actions,
    read_raw_split,
)
from mvfoul.errors import DataError
from mvfoul.labels import ACTION_CLASS_VALUES, OFFENCE_VALUES, SEVERITY_VALUES

ID_COLUMN = "action_id"
CLIPS_COLUMN = "clips"
LABEL_COLUMNS = ("action_class", "offence", "severity")  # same order as the JSON label fields
CSV_COLUMNS = (ID_COLUMN, CLIPS_COLUMN, *LABEL_COLUMNS)  # the order to-csv writes
CLIP_SEPARATOR = ";"

# The raw strings annotations.json uses (mvfoul.labels); anything else in a label column is a typo.
LABEL_VALUES: dict[str, tuple[str, ...]] = dict(
    zip(LABEL_COLUMNS, (ACTION_CLASS_VALUES, OFFENCE_VALUES, SEVERITY_VALUES))
)

_ACTION_DIR = re.compile(r"^action_\d+$")
_CLIP_NAME = re.compile(r"^clip_\d+\.mp4$")


@dataclass(frozen=True)
class _Row:
    """One validated data row, before any disk check."""

    row: int  # 1-based data row (the header is not counted)
    line: int  # line of the file where the row starts
    action_id: str
    clips: tuple[str, ...]  # normalised POSIX paths relative to data_dir
    labels: tuple[str, str, str] | None  # raw strings, None when unlabelled


# --- reading -------------------------------------------------------------------------------


def read_csv_annotations(
    csv_path: str | Path, data_dir: str | Path, labelled: bool = True
) -> tuple[list[Action], SplitReport]:
    """Read a CSV annotation file (schema in the module docstring) into actions and a report.

    The same semantics as :func:`~mvfoul.data.annotations.read_soccernet_split`, through the
    same :func:`~mvfoul.data.annotations.build_actions`: official label rules (with
    ``labelled=True``), missing clips counted with one warning line, existing views kept, actions
    left without a view dropped and counted. Clip paths are ``data_dir / <path in the CSV>``;
    the report's ``split_dir`` is the CSV file. With ``labelled=False`` the label columns may be
    absent or empty and are ignored. A malformed file raises a one-line DataError.
    """
    csv_path = Path(csv_path).expanduser()
    data_dir = Path(data_dir).expanduser()
    rows = parse_csv_rows(csv_path, labelled)
    if not data_dir.is_dir():
        raise DataError(
            f"dataset folder {data_dir} does not exist (the clip paths of {csv_path} are "
            f"relative to it); set dataset.data_dir to the folder the CSV's paths start from"
        )
    raw_actions = [
        RawAction(r.action_id, tuple(data_dir / clip for clip in r.clips), r.labels) for r in rows
    ]
    return build_actions(csv_path, raw_actions, labelled)


def _read_text(csv_path: Path) -> str:
    fix = "write it as a UTF-8 CSV with a header line"
    try:
        data = csv_path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"CSV annotations {csv_path} not found; check the path") from None
    except IsADirectoryError:
        raise DataError(f"CSV annotations {csv_path} is a folder, not a file; {fix}") from None
    except OSError as err:
        raise DataError(f"cannot read CSV annotations {csv_path} ({err.strerror or err})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"CSV annotations {csv_path}: not UTF-8 (byte 0x{data[err.start]:02x} on line "
            f"{line}); save it as UTF-8"
        ) from None


def _header(csv_path: Path, cells: list[str], labelled: bool | None) -> tuple[dict[str, int], bool]:
    """Column name -> index, and whether the label columns are read."""
    names = [c.strip() for c in cells]
    found = ", ".join(repr(n) for n in names)
    duplicated = sorted({n for n in names if names.count(n) > 1 and n})
    if duplicated:
        raise DataError(
            f"CSV annotations {csv_path}, header (line 1): column(s) "
            f"{', '.join(repr(n) for n in duplicated)} appear more than once; keep one of each"
        )
    index = {n: i for i, n in enumerate(names)}
    if labelled is None:  # auto: labelled when any label column is there
        labelled = any(c in index for c in LABEL_COLUMNS)
    required = (ID_COLUMN, CLIPS_COLUMN, *(LABEL_COLUMNS if labelled else ()))
    missing = [c for c in required if c not in index]
    if missing:
        hint = ""
        if len(names) == 1 and (";" in names[0] or "\t" in names[0]):
            hint = " (the header looks ';'- or tab-separated: columns must be separated by ',')"
        elif labelled and all(c in missing for c in LABEL_COLUMNS):
            hint = " (an unlabelled, challenge, file may omit the label columns: read it with labelled=False)"
        raise DataError(
            f"CSV annotations {csv_path}: missing required column(s) "
            f"{', '.join(repr(c) for c in missing)}; columns found: {found}; the header needs "
            f"{', '.join(required)}{hint}"
        )
    return index, labelled


def _clip_path(item: str) -> tuple[str | None, str]:
    """(normalised POSIX path, '') or (None, why the path is refused)."""
    text = item.strip().replace("\\", "/")
    if not text:
        return None, "an empty path (look for ';;' or a ';' at either end)"
    if text.startswith("/") or PureWindowsPath(text).drive:
        return (
            None,
            f"{text!r} is absolute; write it relative to the dataset folder (dataset.data_dir)",
        )
    parts = PurePosixPath(text).parts
    if ".." in parts:
        return None, (
            f"{text!r} contains '..' and may leave the dataset folder; write it relative to "
            f"dataset.data_dir, without '..'"
        )
    if not parts:
        return None, f"{text!r} is not a file path"
    return PurePosixPath(*parts).as_posix(), ""


def _allowed(values: Sequence[str]) -> str:
    return ", ".join("'' (empty)" if v == "" else repr(v) for v in values)


def label_problem(column: str, value: str) -> str | None:
    """Why ``value`` is not a raw string of label column ``column``, or None when it is one."""
    allowed = LABEL_VALUES[column]
    if value.strip() in allowed:
        return None
    close = difflib.get_close_matches(value.strip(), [v for v in allowed if v], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{value!r} is not an allowed value (allowed: {_allowed(allowed)}){hint}"


def parse_csv_rows(csv_path: Path, labelled: bool | None) -> list[_Row]:
    """Every data row, validated; ``labelled=None`` reads the labels when the columns exist."""
    text = _read_text(csv_path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[_Row] = []
    seen: dict[str, _Row] = {}
    index: dict[str, int] | None = None
    n_columns = 0
    data_row = 0
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError(
                f"CSV annotations {csv_path}, line {reader.line_num}: not valid CSV ({err}); "
                f"quote cells that hold commas, quotes or line breaks"
            ) from None
        start, line = line, reader.line_num + 1
        if not cells:  # a blank line
            continue
        if index is None:
            index, labels_read = _header(csv_path, cells, labelled)
            n_columns = len(cells)
            continue
        data_row += 1
        where = f"CSV annotations {csv_path}, row {data_row} (line {start})"
        if len(cells) != n_columns:
            raise DataError(
                f"{where}: {len(cells)} cells where the header has {n_columns}; quote cells that "
                f"hold commas"
            )

        cell = {column: cells[position] for column, position in index.items()}
        action_id = cell[ID_COLUMN].strip()
        if not action_id:
            raise DataError(f"{where}, column '{ID_COLUMN}': empty; every action needs an id")
        if action_id in seen:
            first = seen[action_id]
            raise DataError(
                f"{where}, column '{ID_COLUMN}': {action_id!r} is already used by row "
                f"{first.row} (line {first.line}); each action needs exactly one row"
            )
        if not cell[CLIPS_COLUMN].strip():
            raise DataError(
                f"{where}, column '{CLIPS_COLUMN}': empty; list the action's views relative to "
                f"dataset.data_dir, separated by '{CLIP_SEPARATOR}' (e.g. Train/action_0/clip_0.mp4)"
            )
        clips = []
        for k, item in enumerate(cell[CLIPS_COLUMN].split(CLIP_SEPARATOR)):
            path, problem = _clip_path(item)
            if path is None:
                raise DataError(f"{where}, column '{CLIPS_COLUMN}', clip {k + 1}: {problem}")
            clips.append(path)
        labels = None
        if labels_read:
            action_class, offence, severity = (cell[c] for c in LABEL_COLUMNS)
            values = (action_class, offence, severity)
            for column, value in zip(LABEL_COLUMNS, values):
                issue = label_problem(column, value)
                if issue:
                    raise DataError(f"{where}, column '{column}': {issue}")
            labels = values
        row = _Row(data_row, start, action_id, tuple(clips), labels)
        seen[action_id] = row
        rows.append(row)
    if index is None:
        raise DataError(
            f"CSV annotations {csv_path} is empty; expected a header line "
            f"({', '.join(CSV_COLUMNS)}) and one row per action"
        )
    return rows


# --- converting ----------------------------------------------------------------------------


def write_atomically(path: Path, text: str, overwrite: bool) -> None:
    """Write ``text`` to ``path`` atomically (:mod:`mvfoul.atomic`), refusing to replace an
    existing file unless ``overwrite``."""
    if path.exists() and not overwrite:
        raise DataError(f"{path} already exists; pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot write {path} ({err.strerror or err})") from None
    atomic.write_text(path, text)


def split_to_csv(
    split_dir: str | Path, out_csv: str | Path, overwrite: bool = False
) -> tuple[int, int, int]:
    """Write every action of ``split_dir/annotations.json`` (unfiltered, JSON order, raw label
    strings) as CSV rows, clip paths relative to ``split_dir``'s parent (the data_dir).

    The label columns are written when every action has the three label strings and left out
    when none has them (a challenge split). Returns (rows, clips, clips missing on disk).
    """
    split_dir = Path(split_dir).expanduser()
    out_csv = Path(out_csv).expanduser()
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} does not exist; give a folder like data/Train")
    source = split_dir / ANNOTATIONS_FILE
    raw_actions = read_raw_split(split_dir, labelled=False)
    with_labels = [r.labels is not None for r in raw_actions]
    labelled = bool(raw_actions) and all(with_labels)
    if any(with_labels) and not labelled:
        unlabelled = raw_actions[with_labels.index(False)].action_id
        raise DataError(
            f"annotations file {source}: action {unlabelled!r} lacks a label field ('Action "
            f"class', 'Offence' or 'Severity') while other actions have them; a CSV is either "
            f"labelled or not: fix that action"
        )
    split_name = split_dir.resolve().name  # "data/Train/." or "." still name the split
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS if labelled else (ID_COLUMN, CLIPS_COLUMN))
    n_clips = n_missing = 0
    for raw in raw_actions:
        where = f"annotations file {source}: action {raw.action_id!r}"
        if raw.action_id != raw.action_id.strip() or not raw.action_id:
            raise DataError(
                f"{where}: an id empty or with surrounding spaces cannot round-trip through CSV"
            )
        paths = [f"{split_name}/{clip.relative_to(split_dir).as_posix()}" for clip in raw.clips]
        if not paths:
            raise DataError(f"{where}: lists no clip; a CSV row needs at least one")
        if any(CLIP_SEPARATOR in p for p in paths):
            raise DataError(
                f"{where}: a clip path contains '{CLIP_SEPARATOR}', the CSV's clip separator"
            )
        n_clips += len(paths)
        n_missing += sum(not clip.is_file() for clip in raw.clips)
        row = [raw.action_id, CLIP_SEPARATOR.join(paths)]
        if labelled and raw.labels is not None:  # parsed with labelled=True: every row has them
            for column, value in zip(LABEL_COLUMNS, raw.labels):
                problem = label_problem(column, value)
                if problem:
                    raise DataError(
                        f"{where}, {column}: {problem}; the CSV reader refuses it, fix the annotation"
                    )
            row += raw.labels
        writer.writerow(row)
    write_atomically(out_csv, out.getvalue(), overwrite)
    return len(raw_actions), n_clips, n_missing


def csv_to_split(
    csv_path: str | Path, data_dir: str | Path, out_split_dir: str | Path, overwrite: bool = False
) -> tuple[int, int, int]:
    """Write ``out_split_dir/annotations.json`` (SoccerNet layout) from a CSV whose clip paths are
    relative to ``data_dir``.

    The JSON names a clip by ``action_<n>/clip_<k>`` inside the split folder holding it, so every
    clip path must be ``<out_split_dir relative to data_dir>/action_<n>/clip_<k>.mp4``; anything
    else fails in one line. Label fields are written when the CSV has label columns (raw strings,
    empty ones included) and left out otherwise. Returns (actions, clips, clips missing on disk).
    """
    csv_path = Path(csv_path).expanduser()
    data_dir = Path(data_dir).expanduser()
    out_split_dir = Path(out_split_dir).expanduser()
    rows = parse_csv_rows(csv_path, labelled=None)
    try:
        split_rel = out_split_dir.resolve().relative_to(data_dir.resolve())
    except ValueError:
        raise DataError(
            f"output split folder {out_split_dir} is not inside {data_dir}: annotations.json "
            f"names its clips relative to its own folder, so it must sit in the folder the CSV's "
            f"clip paths lead to (e.g. {data_dir}/Train)"
        ) from None
    if not split_rel.parts:
        raise DataError(
            f"output split folder {out_split_dir} is the data folder itself; give the split folder "
            f"under it that holds action_<n>/ (e.g. {data_dir}/Train)"
        )
    actions: dict[str, dict] = {}
    n_clips = n_missing = 0
    for row in rows:
        urls = []
        for k, clip in enumerate(row.clips):
            parts = PurePosixPath(clip).parts
            if not (
                len(parts) == len(split_rel.parts) + 2
                and parts[:-2] == split_rel.parts
                and _ACTION_DIR.match(parts[-2])
                and _CLIP_NAME.match(parts[-1])
            ):
                raise DataError(
                    f"CSV annotations {csv_path}, row {row.row} (line {row.line}), column "
                    f"'{CLIPS_COLUMN}', clip {k + 1}: {clip!r} is not "
                    f"'{split_rel.as_posix()}/action_<n>/clip_<k>.mp4'; annotations.json can only "
                    f"name clips as action_<n>/clip_<k> inside its own split folder "
                    f"({out_split_dir}), so this CSV cannot be written as one"
                )
            urls.append({"Url": f"Dataset/{parts[-2]}/{parts[-1][: -len('.mp4')]}"})
            n_missing += not (data_dir / clip).is_file()
        n_clips += len(urls)
        entry: dict = {}
        if row.labels is not None:
            entry.update(zip(LABEL_FIELDS, row.labels))
        entry["Clips"] = urls
        actions[row.action_id] = entry
    document = {
        "Set": split_rel.parts[-1].lower(),
        "Number of actions": len(actions),
        "Actions": actions,
    }
    write_atomically(
        out_split_dir / ANNOTATIONS_FILE, json.dumps(document, indent=4) + "\n", overwrite
    )
    return len(actions), n_clips, n_missing


# --- command line --------------------------------------------------------------------------


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes in one line, like every other mvfoul error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from mvfoul.cli import PREFIX

        sys.stderr.write(f"{PREFIX}{message}; see `{self.prog} --help`\n")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m mvfoul.data.csv_annotations",
        description="Convert SoccerNet-MVFoul annotations between annotations.json and CSV "
        "(one row per action: action_id, clips, action_class, offence, severity).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{to-csv,to-json}")
    to_csv = commands.add_parser(
        "to-csv",
        help="SPLIT_DIR/annotations.json -> OUT.csv (paths relative to SPLIT_DIR's parent)",
    )
    to_csv.add_argument("split_dir", metavar="SPLIT_DIR", help="a split folder, e.g. data/Train")
    to_csv.add_argument("out_csv", metavar="OUT.csv")
    to_json = commands.add_parser("to-json", help="CSV -> OUT_SPLIT_DIR/annotations.json")
    to_json.add_argument("csv_path", metavar="CSV")
    to_json.add_argument(
        "data_dir", metavar="DATA_DIR", help="the folder the CSV's clip paths are relative to"
    )
    to_json.add_argument("out_split_dir", metavar="OUT_SPLIT_DIR", help="e.g. DATA_DIR/Train")
    for command in (to_csv, to_json):
        command.add_argument(
            "--force", action="store_true", help="overwrite an existing output file"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mvfoul.data.csv_annotations {to-csv,to-json} ...``; one line out, exit 0 or 2."""
    from mvfoul.cli import PREFIX

    args = _parser().parse_args(argv)
    try:
        if args.command == "to-csv":
            out = Path(args.out_csv)
            rows, clips, missing = split_to_csv(args.split_dir, out, overwrite=args.force)
            what = f"{rows} rows to {out} (from {Path(args.split_dir) / ANNOTATIONS_FILE}"
        else:
            out = Path(args.out_split_dir) / ANNOTATIONS_FILE
            rows, clips, missing = csv_to_split(
                args.csv_path, args.data_dir, args.out_split_dir, overwrite=args.force
            )
            what = f"{rows} actions to {out} (from {args.csv_path}"
    except DataError as exc:
        sys.stderr.write(f"{PREFIX}{exc}\n")
        return 2
    absent = f", {missing} missing on disk (kept: counted when read)" if missing else ""
    print(f"wrote {what}; {clips} clips{absent})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
