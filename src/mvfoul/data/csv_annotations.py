"""CSV annotations (one row per action, schema in ``docs/csv-annotations.md``): the same actions,
rules and report as ``annotations.json``; and a converter between the two formats.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NamedTuple

from mvfoul import atomic
from mvfoul.data import annotations as ann
from mvfoul.errors import DataError
from mvfoul.labels import ACTION_CLASS_VALUES, OFFENCE_VALUES, SEVERITY_VALUES

LABEL_COLUMNS = ("action_class", "offence", "severity")  # same order as the JSON label fields
CSV_COLUMNS = ("action_id", "clips", *LABEL_COLUMNS)  # the order to-csv writes
# The raw strings annotations.json uses (mvfoul.labels); anything else in a label column is a typo.
LABEL_VALUES = dict(zip(LABEL_COLUMNS, (ACTION_CLASS_VALUES, OFFENCE_VALUES, SEVERITY_VALUES)))


class _Row(NamedTuple):
    at: str  # "row <1-based data row> (line <line where it starts>)"
    action_id: str
    clips: tuple[str, ...]  # normalised POSIX paths relative to data_dir
    labels: tuple[str, str, str] | None  # raw strings, None when unlabelled


def read_csv_annotations(
    csv_path: str | Path, data_dir: str | Path, labelled: bool = True
) -> tuple[list[ann.Action], ann.SplitReport]:
    """What :func:`~mvfoul.data.annotations.read_soccernet_split` gives, for a CSV file whose clip
    paths are under ``data_dir`` (the report's ``split_dir`` is the CSV file)."""
    csv_path = Path(csv_path).expanduser()
    data_dir = Path(data_dir).expanduser()
    rows = parse_csv_rows(csv_path, labelled)
    if not data_dir.is_dir():
        raise DataError(
            f"dataset folder {data_dir} does not exist (the clip paths of {csv_path} are "
            f"relative to it); set dataset.data_dir to the folder the CSV's paths start from"
        )
    raw = [ann.RawAction(r.action_id, tuple(data_dir / c for c in r.clips), r.labels) for r in rows]
    return ann.build_actions(csv_path, raw, labelled)


def _records(csv_path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line where it starts, cells) of every non-blank line of the file."""
    try:
        data = csv_path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"CSV annotations {csv_path} not found; check the path") from None
    except IsADirectoryError:
        raise DataError(
            f"CSV annotations {csv_path} is a folder, not a file; write it as a UTF-8 CSV with a "
            f"header line"
        ) from None
    except OSError as err:
        raise DataError(f"cannot read CSV annotations {csv_path} ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"CSV annotations {csv_path}: not UTF-8 (byte 0x{data[err.start]:02x} on line "
            f"{line}); save it as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    try:
        for cells in reader:
            if cells:
                yield start, cells
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(
            f"CSV annotations {csv_path}, line {reader.line_num}: not valid CSV ({err}); "
            f"quote cells that hold commas, quotes or line breaks"
        ) from None


def _header(csv_path: Path, cells: list[str], labelled: bool | None) -> tuple[dict[str, int], bool]:
    """Column name -> index, and whether the label columns are read (``None``: when present)."""
    names = [c.strip() for c in cells]
    if duplicated := sorted({n for n in names if n and names.count(n) > 1}):
        raise DataError(
            f"CSV annotations {csv_path}, header (line 1): column(s) "
            f"{', '.join(map(repr, duplicated))} appear more than once; keep one of each"
        )
    index = {n: i for i, n in enumerate(names)}
    if labelled is None:
        labelled = any(c in index for c in LABEL_COLUMNS)
    required = CSV_COLUMNS if labelled else CSV_COLUMNS[:2]
    if missing := [c for c in required if c not in index]:
        hint = ""
        if len(names) == 1 and (";" in names[0] or "\t" in names[0]):
            hint = " (the header looks ';'- or tab-separated: columns must be separated by ',')"
        elif labelled and all(c in missing for c in LABEL_COLUMNS):
            hint = " (an unlabelled, challenge, file may omit the label columns: read it with labelled=False)"
        raise DataError(
            f"CSV annotations {csv_path}: missing required column(s) "
            f"{', '.join(map(repr, missing))}; columns found: {', '.join(map(repr, names))}; the "
            f"header needs {', '.join(required)}{hint}"
        )
    return index, labelled


def _clip_path(item: str, where: str) -> str:
    text = item.strip().replace("\\", "/")
    if not text:
        raise DataError(f"{where}: an empty path (look for ';;' or a ';' at either end)")
    if text.startswith("/") or PureWindowsPath(text).drive:
        raise DataError(
            f"{where}: {text!r} is absolute; write it relative to the dataset folder "
            f"(dataset.data_dir)"
        )
    parts = PurePosixPath(text).parts
    if ".." in parts:
        raise DataError(
            f"{where}: {text!r} contains '..' and may leave the dataset folder; write it relative "
            f"to dataset.data_dir, without '..'"
        )
    if not parts:
        raise DataError(f"{where}: {text!r} is not a file path")
    return PurePosixPath(*parts).as_posix()


def label_problem(labels: Sequence[str]) -> tuple[str, str] | None:
    """The first label column whose raw string is not allowed, and why; None when all are."""
    for column, value in zip(LABEL_COLUMNS, labels):
        allowed = LABEL_VALUES[column]
        if value.strip() not in allowed:
            close = difflib.get_close_matches(value.strip(), [v for v in allowed if v], n=1)
            shown = ", ".join("'' (empty)" if v == "" else repr(v) for v in allowed)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return column, f"{value!r} is not an allowed value (allowed: {shown}){hint}"
    return None


def parse_csv_rows(csv_path: Path, labelled: bool | None) -> list[_Row]:
    """Every data row, validated; ``labelled=None`` reads the labels when the columns exist."""
    records = _records(csv_path)
    header = next(records, None)
    if header is None:
        raise DataError(
            f"CSV annotations {csv_path} is empty; expected a header line "
            f"({', '.join(CSV_COLUMNS)}) and one row per action"
        )
    index, labels_read = _header(csv_path, header[1], labelled)
    rows: dict[str, _Row] = {}
    for n, (line, cells) in enumerate(records, 1):
        at = f"row {n} (line {line})"
        where = f"CSV annotations {csv_path}, {at}"
        if len(cells) != len(header[1]):
            raise DataError(
                f"{where}: {len(cells)} cells where the header has {len(header[1])}; quote cells "
                f"that hold commas"
            )
        cell = {column: cells[position] for column, position in index.items()}
        action_id = cell["action_id"].strip()
        if not action_id:
            raise DataError(f"{where}, column 'action_id': empty; every action needs an id")
        if action_id in rows:
            raise DataError(
                f"{where}, column 'action_id': {action_id!r} is already used by "
                f"{rows[action_id].at}; each action needs exactly one row"
            )
        if not cell["clips"].strip():
            raise DataError(
                f"{where}, column 'clips': empty; list the action's views relative to "
                f"dataset.data_dir, separated by ';' (e.g. Train/action_0/clip_0.mp4)"
            )
        items = enumerate(cell["clips"].split(";"), 1)
        clips = tuple(_clip_path(item, f"{where}, column 'clips', clip {k}") for k, item in items)
        labels = None
        if labels_read:
            labels = (cell["action_class"], cell["offence"], cell["severity"])
            if bad := label_problem(labels):
                raise DataError(f"{where}, column '{bad[0]}': {bad[1]}")
        rows[action_id] = _Row(at, action_id, clips, labels)
    return list(rows.values())


def write_atomically(path: Path, text: str, overwrite: bool) -> None:
    """Write ``text`` to ``path`` (:mod:`mvfoul.atomic`); an existing file only if ``overwrite``."""
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
    """Every action of ``split_dir/annotations.json`` as a CSV row (label columns only when every
    action has them) to ``out_csv``. Returns (rows, clips, clips missing on disk)."""
    split_dir = Path(split_dir).expanduser()
    out_csv = Path(out_csv).expanduser()
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} does not exist; give a folder like data/Train")
    source = split_dir / ann.ANNOTATIONS_FILE
    raw_actions = ann.read_raw_split(split_dir, labelled=False)
    unlabelled = [r.action_id for r in raw_actions if r.labels is None]
    if 0 < len(unlabelled) < len(raw_actions):
        raise DataError(
            f"annotations file {source}: action {unlabelled[0]!r} lacks a label field ('Action "
            f"class', 'Offence' or 'Severity') while other actions have them; a CSV is either "
            f"labelled or not: fix that action"
        )
    labelled = bool(raw_actions) and not unlabelled
    split_name = split_dir.resolve().name  # "data/Train/." or "." still name the split
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS if labelled else CSV_COLUMNS[:2])
    for raw in raw_actions:
        where = f"annotations file {source}: action {raw.action_id!r}"
        if raw.action_id != raw.action_id.strip() or not raw.action_id:
            raise DataError(
                f"{where}: an id empty or with surrounding spaces cannot round-trip through CSV"
            )
        paths = [f"{split_name}/{clip.relative_to(split_dir).as_posix()}" for clip in raw.clips]
        if not paths:
            raise DataError(f"{where}: lists no clip; a CSV row needs at least one")
        if any(";" in p for p in paths):
            raise DataError(f"{where}: a clip path contains ';', the CSV's clip separator")
        row = [raw.action_id, ";".join(paths)]
        if labelled and raw.labels is not None:  # every action has them when labelled
            if bad := label_problem(raw.labels):
                raise DataError(
                    f"{where}, {bad[0]}: {bad[1]}; the CSV reader refuses it, fix the annotation"
                )
            row += raw.labels
        writer.writerow(row)
    write_atomically(out_csv, out.getvalue(), overwrite)
    clips = [clip for raw in raw_actions for clip in raw.clips]
    return len(raw_actions), len(clips), sum(not clip.is_file() for clip in clips)


def csv_to_split(
    csv_path: str | Path, data_dir: str | Path, out_split_dir: str | Path, overwrite: bool = False
) -> tuple[int, int, int]:
    """Write ``out_split_dir/annotations.json`` (SoccerNet layout) from a CSV whose clip paths are
    relative to ``data_dir``; label fields when the CSV has label columns. Returns (actions,
    clips, clips missing on disk)."""
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
    # The JSON names a clip only as action_<n>/clip_<k> inside the split folder holding it.
    layout = re.compile(rf"{re.escape(split_rel.as_posix())}/(action_\d+/clip_\d+)\.mp4")
    actions: dict[str, dict] = {}
    for row in rows:
        urls = []
        for k, clip in enumerate(row.clips, 1):
            if not (match := layout.fullmatch(clip)):
                raise DataError(
                    f"CSV annotations {csv_path}, {row.at}, column 'clips', clip {k}: {clip!r} is "
                    f"not '{split_rel.as_posix()}/action_<n>/clip_<k>.mp4'; annotations.json can "
                    f"only name clips as action_<n>/clip_<k> inside its own split folder "
                    f"({out_split_dir}), so this CSV cannot be written as one"
                )
            urls.append({"Url": f"Dataset/{match[1]}"})
        entry: dict = dict(zip(ann.LABEL_FIELDS, row.labels)) if row.labels else {}
        entry["Clips"] = urls
        actions[row.action_id] = entry
    document = {
        "Set": split_rel.parts[-1].lower(),
        "Number of actions": len(actions),
        "Actions": actions,
    }
    text = json.dumps(document, indent=4) + "\n"
    write_atomically(out_split_dir / ann.ANNOTATIONS_FILE, text, overwrite)
    clips = [data_dir / clip for row in rows for clip in row.clips]
    return len(actions), len(clips), sum(not clip.is_file() for clip in clips)


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes in one line, like every other mvfoul error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from mvfoul.cli import PREFIX

        sys.stderr.write(f"{PREFIX}{message}; see `{self.prog} --help`\n")
        sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
    from mvfoul.cli import PREFIX

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
    args = parser.parse_args(argv)
    try:
        if args.command == "to-csv":
            rows, clips, missing = split_to_csv(args.split_dir, args.out_csv, args.force)
            source = Path(args.split_dir) / ann.ANNOTATIONS_FILE
            what = f"{rows} rows to {Path(args.out_csv)} (from {source}"
        else:
            out = Path(args.out_split_dir) / ann.ANNOTATIONS_FILE
            rows, clips, missing = csv_to_split(
                args.csv_path, args.data_dir, args.out_split_dir, args.force
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
