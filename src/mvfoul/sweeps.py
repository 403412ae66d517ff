"""Sweep summaries: one table across the jobs of a --multirun.

A sweep folder is ``multirun/<experiment.name>/<date_time>/``, with one numbered folder per job.
Its table has a row per job: the job number, the overrides that differ between jobs (those
common to every job go in the header), the status, the best value of ``experiment.monitor`` and
its epoch, ``val/leaderboard`` at that epoch and at the last epoch, and the wall time. It is
written as ``sweep_summary.csv`` and ``sweep_summary.md`` in the sweep folder:

- automatically, by :class:`SweepSummaryCallback` (``hydra.callbacks`` in ``conf/config.yaml``):
  after every job, so a sweep that stops half-way still has its table, and at the end of the
  sweep, where it is also printed;
- on demand, for any sweep folder, finished, still running or crashed::

    python -m mvfoul.sweeps summarize multirun/quick_test/2026-11-26_13-04-10

A job's status:

``done``
    it wrote ``summary.json`` (training ran to its end);
``failed``
    it raised an error: the callback records that, with the message, in the job's
    ``job_status.json`` (a run the divergence guard stopped says so in its ``summary.json``);
``running``
    neither, and the sweep is still running: the process that launched it still holds the
    sweep folder's ``.mvfoul.sweep.lock`` (a POSIX record lock, released when it ends or dies);
``incomplete``
    neither, and the sweep is over: the job was interrupted (killed, Ctrl-C, out of memory).

A sweep whose process exits before the end (Hydra raises a failed job's error once the batch is
done; Ctrl-C) is marked ``stopped`` in ``sweep_state.json`` and its table rewritten on the way out.

Where the sweep's process cannot be checked (a sweep launched without the callback, or a file
system without POSIX locks), a job without a result counts as running while a file in its folder changed in
the last 30 minutes, and as incomplete after that.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import errno
import io
import json
import logging
import math
import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mvfoul import atomic
from mvfoul.errors import MvfoulError

log = logging.getLogger(__name__)

SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_MD = "sweep_summary.md"
SWEEP_STATE = "sweep_state.json"  # written by the callback: who runs the sweep, planned jobs, end
JOB_STATUS = "job_status.json"  # written by the callback in each job folder when the job returns
RUN_SUMMARY = "summary.json"  # written by every training run (mvfoul.train)
LEADERBOARD = "val/leaderboard"
# Without a process to check, a job whose folder changed this recently counts as running.
ACTIVE_WITHIN_S = 30 * 60

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
SWEEPER_NAMES = {BASIC_SWEEPER: "basic", OPTUNA_SWEEPER: "optuna"}

NOT_A_SWEEP_HINT = "expected multirun/<experiment.name>/<date_time>/, holding multirun.yaml and numbered job folders"


# --- the table ---------------------------------------------------------------------------------


@dataclass
class JobRow:
    """One job of a sweep, as its folder shows it."""

    job: int
    folder: Path
    overrides: list[str] | None  # None: .hydra/overrides.yaml not written (yet)
    status: str  # done | failed | running | incomplete
    monitor: str | None = None
    mode: str | None = None
    best: float | None = None  # best value of the monitor (summary.json best.value)
    best_epoch: int | None = None
    leaderboard_at_best: float | None = None  # val/leaderboard at best_epoch
    leaderboard_last: float | None = None  # val/leaderboard at the last epoch
    wall_time_s: float | None = None
    error: str | None = None
    varying: dict[str, str] = field(default_factory=dict)  # override key -> value, keys that differ


@dataclass
class SweepSummary:
    """A sweep's table, and what its header says."""

    sweep_dir: Path
    state: str  # finished | running | stopped | unknown
    jobs: list[JobRow]
    common: list[str]  # overrides every job has
    keys: list[str]  # override keys whose values differ between jobs: a column each
    planned: int | None = None  # jobs the sweep will run (None: unknown)
    config_name: str | None = None
    sweeper: str | None = None  # basic | optuna | the sweeper's class
    study: str | None = None  # optuna: "<study_name> in <storage>"
    monitor: str | None = None
    mode: str | None = None
    built: datetime = field(default_factory=datetime.now)

    def count(self, status: str) -> int:
        return sum(1 for j in self.jobs if j.status == status)

    @property
    def monitor_per_job(self) -> bool:
        """The jobs monitor different metrics: the table shows each job's."""
        return self.monitor is None and any(j.monitor for j in self.jobs)

    @property
    def not_started(self) -> int | None:
        return None if self.planned is None else max(0, self.planned - len(self.jobs))

    def best_job(self) -> JobRow | None:
        scored = [j for j in self.jobs if j.status == "done" and _is_number(j.best)]
        if not scored or len({j.monitor for j in scored}) > 1:
            return None  # nothing to compare, or values of different metrics
        pick = min if (self.mode or scored[0].mode) == "min" else max
        return pick(scored, key=lambda j: j.best)  # type: ignore[arg-type, return-value]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _job_number(folder: Path) -> int | None:
    if folder.name.isdigit():
        return int(folder.name)
    hydra_yaml = _read_yaml(folder / ".hydra" / "hydra.yaml")
    try:
        return int(hydra_yaml["hydra"]["job"]["num"])
    except (TypeError, KeyError, ValueError):
        return None


def job_folders(sweep_dir: Path) -> list[tuple[int, Path]]:
    """(job number, folder) of every job folder in a sweep, made or half-made, by number."""
    found = []
    for child in sweep_dir.iterdir():
        if child.is_dir() and not child.name.startswith("."):
            if child.name.isdigit() or (child / ".hydra").is_dir():
                num = _job_number(child)
                if num is not None:
                    found.append((num, child))
    return sorted(found)


def is_sweep_dir(path: Path) -> bool:
    if (path / "multirun.yaml").is_file() or (path / SWEEP_STATE).is_file():
        return True
    return any(c.is_dir() and c.name.isdigit() and (c / ".hydra").is_dir() for c in path.iterdir())


def _check_sweep_dir(path: Path) -> None:
    """Raise a one-line MvfoulError saying what ``path`` is when it is not a sweep folder."""
    if not path.exists():
        raise MvfoulError(f"{path}: no such folder; {NOT_A_SWEEP_HINT}")
    if not path.is_dir():
        raise MvfoulError(f"{path} is a file, not a sweep folder; {NOT_A_SWEEP_HINT}")
    if is_sweep_dir(path):
        return
    if (path / ".hydra").is_dir():
        if path.parent != path and is_sweep_dir(path.parent):
            raise MvfoulError(f"{path} is one job of a sweep: give the sweep folder, {path.parent}")
        raise MvfoulError(
            f"{path} is a single run (made without --multirun), not a sweep; {NOT_A_SWEEP_HINT}"
        )
    sweeps = sorted(c for c in path.iterdir() if c.is_dir() and is_sweep_dir(c))
    if sweeps:
        raise MvfoulError(
            f"{path} holds {len(sweeps)} sweep(s), not jobs: give one of them, e.g. the latest, {sweeps[-1]}"
        )
    raise MvfoulError(f"{path} is not a sweep folder: {NOT_A_SWEEP_HINT}")


# --- is the sweep still running? ---------------------------------------------------------------


# The sweep's process holds a shared POSIX record lock on this file while it runs: any process
# can then tell whether it is alive by asking for an exclusive lock, without knowing its pid.
# (POSIX locks are not inherited by forked DataLoader workers and vanish with their process,
# even a SIGKILLed one.) Shared, so that several launches into one sweep folder can all hold it.
SWEEP_LOCK = ".mvfoul.sweep.lock"
_HELD_SWEEP_LOCKS: dict[Path, int] = {}


def hold_sweep_lock(sweep_dir: Path) -> None:
    """Mark the sweep as running for as long as this process lives (or until released)."""
    import fcntl

    folder = sweep_dir.resolve()
    if folder not in _HELD_SWEEP_LOCKS:
        fd = os.open(folder / SWEEP_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(fd, fcntl.LOCK_SH)
        _HELD_SWEEP_LOCKS[folder] = fd


def release_sweep_lock(sweep_dir: Path) -> None:
    fd = _HELD_SWEEP_LOCKS.pop(sweep_dir.resolve(), None)
    if fd is not None:
        os.close(fd)


def _sweep_process_alive(sweep_dir: Path) -> bool | None:
    """Is a process of the sweep alive? None where it cannot be told (no lock file)."""
    import fcntl

    folder = sweep_dir.resolve()
    if folder in _HELD_SWEEP_LOCKS:
        # This process holds it (and closing another descriptor of the file would drop it).
        return True
    try:
        fd = os.open(folder / SWEEP_LOCK, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        # Refused: a live process holds it. Anything else (a file system without locks): unknown.
        return True if err.errno in (errno.EAGAIN, errno.EACCES) else None
    finally:
        os.close(fd)  # releases the probe's lock, if it got one
    return False


def sweep_state(sweep_dir: Path) -> str:
    """finished (the sweep reached its end), running (its process is alive), stopped (its process
    is gone before the end: a job failed, or it was killed), unknown (cannot be told)."""
    record = _read_json(sweep_dir / SWEEP_STATE)
    if record is None:
        return "unknown"
    if record.get("ended"):
        return "finished"
    if record.get("stopped"):
        return "stopped"
    alive = _sweep_process_alive(sweep_dir)
    if alive is None:
        return "unknown"
    return "running" if alive else "stopped"


def _last_activity(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return newest


# --- reading one job ---------------------------------------------------------------------------


def _error_line(exc: Any) -> str:
    """One line for a job's exception: mvfoul's own message where it has one."""
    if not isinstance(exc, BaseException):
        return str(exc)
    from mvfoul.cli import explain

    text = explain(exc) if isinstance(exc, Exception) else None
    text = text or f"{type(exc).__name__}: {exc}"
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line[:500] or type(exc).__name__


def read_job(num: int, folder: Path, state: str, now: float | None = None) -> JobRow:
    """A job's row, from what its folder holds (see the module's docstring for the statuses)."""
    overrides = _read_yaml(folder / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else None
    row = JobRow(job=num, folder=folder, overrides=overrides, status="incomplete")
    summary = _read_json(folder / RUN_SUMMARY)
    marker = _read_json(folder / JOB_STATUS) or {}
    if summary is not None:
        # A run the divergence guard stopped writes its summary too, saying so.
        row.status = "failed" if summary.get("status") == "diverged" else "done"
        if row.status == "failed":
            row.error = summary.get("stopped")
        row.monitor, row.mode = summary.get("monitor"), summary.get("mode")
        best = summary.get("best") or {}
        row.best, row.best_epoch = best.get("value"), best.get("epoch")
        history = summary.get("history") or {}
        if row.best_epoch is not None:
            row.leaderboard_at_best = (history.get(str(row.best_epoch)) or {}).get(LEADERBOARD)
        row.leaderboard_last = (summary.get("final_metrics") or {}).get(LEADERBOARD)
        row.wall_time_s = summary.get("wall_time_s")
        return row
    if marker.get("status") == "failed":
        row.status, row.error, row.wall_time_s = (
            "failed",
            marker.get("error"),
            marker.get("duration_s"),
        )
        return row
    if marker.get("status") == "completed":
        row.error = f"the job returned but wrote no {RUN_SUMMARY}"
    elif state == "running":
        row.status = "running"
    elif state == "unknown":
        now = time.time() if now is None else now
        if now - _last_activity(folder) < ACTIVE_WITHIN_S:
            row.status = "running"
    return row


# --- the whole sweep ---------------------------------------------------------------------------


def _planned_jobs(hydra_cfg: Any) -> int | None:
    """How many jobs a sweep runs, from its Hydra config (None where that cannot be told)."""
    try:
        target = OmegaConf.select(hydra_cfg, "sweeper._target_")
        if target == OPTUNA_SWEEPER:
            return int(OmegaConf.select(hydra_cfg, "sweeper.n_trials"))
        if target == BASIC_SWEEPER:
            from hydra.core.override_parser.overrides_parser import OverridesParser

            # The basic sweeper runs the cross product of every swept key's values; a key given on
            # the command line replaces the same key of hydra.sweeper.params.
            params = OmegaConf.select(hydra_cfg, "sweeper.params") or {}
            args = [f"{k}={v}" for k, v in params.items()]
            args += [str(o) for o in OmegaConf.select(hydra_cfg, "overrides.task") or []]
            swept = {
                o.get_key_element(): len(list(o.sweep_string_iterator()))
                for o in OverridesParser.create().parse_overrides(args)
                if o.is_sweep_override()
            }
            return math.prod(swept.values())
    except Exception:  # noqa: BLE001 - a count we cannot make is left out of the header
        return None
    return None


def _mask_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def _split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


def summarize_sweep(sweep_dir: str | Path, now: float | None = None) -> SweepSummary:
    """Read a sweep folder (finished, running or crashed) into its table.

    Raises :class:`MvfoulError` (one line) when ``sweep_dir`` is not a sweep folder.
    """
    sweep_dir = Path(sweep_dir)
    _check_sweep_dir(sweep_dir)
    state = sweep_state(sweep_dir)
    jobs = [read_job(num, folder, state, now) for num, folder in job_folders(sweep_dir)]

    known = [j.overrides for j in jobs if j.overrides is not None]
    common = [o for o in known[0] if all(o in other for other in known)] if known else []
    keys: list[str] = []
    for overrides in known:
        for override in overrides:
            key = _split_override(override)[0]
            if override not in common and key not in keys:
                keys.append(key)
    for job in jobs:
        job.varying = {k: v for k, v in map(_split_override, job.overrides or []) if k in keys}

    summary = SweepSummary(sweep_dir=sweep_dir, state=state, jobs=jobs, common=common, keys=keys)
    record = _read_json(sweep_dir / SWEEP_STATE) or {}
    try:
        multirun = (
            OmegaConf.load(sweep_dir / "multirun.yaml")
            if (sweep_dir / "multirun.yaml").is_file()
            else None
        )
    except Exception:  # noqa: BLE001 - an unreadable multirun.yaml only costs the header details
        multirun = None
    hydra_cfg = multirun.hydra if isinstance(multirun, DictConfig) and "hydra" in multirun else None
    summary.planned = (
        record.get("planned_jobs")
        if "planned_jobs" in record
        else (_planned_jobs(hydra_cfg) if hydra_cfg is not None else None)
    )
    target = record.get("sweeper") or (
        OmegaConf.select(hydra_cfg, "sweeper._target_") if hydra_cfg is not None else None
    )
    summary.sweeper = SWEEPER_NAMES.get(target, target) if target else None
    summary.config_name = record.get("config_name") or (
        OmegaConf.select(hydra_cfg, "job.config_name") if hydra_cfg is not None else None
    )
    if summary.config_name is None:
        for job in jobs:
            hydra_yaml = _read_yaml(job.folder / ".hydra" / "hydra.yaml")
            if isinstance(hydra_yaml, dict):
                summary.config_name = (
                    (hydra_yaml.get("hydra") or {}).get("job", {}).get("config_name")
                )
                break
    if record.get("study_name"):
        summary.study = f"{record['study_name']} in {record.get('storage') or 'memory (not kept)'}"

    done = [j for j in jobs if j.monitor]
    if done:
        summary.monitor, summary.mode = done[0].monitor, done[0].mode
        if any(j.monitor != summary.monitor for j in done):
            summary.monitor = None  # differs between jobs: a column of its own
    else:
        for job in jobs:
            config = _read_yaml(job.folder / ".hydra" / "config.yaml")
            experiment = config.get("experiment") if isinstance(config, dict) else None
            if isinstance(experiment, dict) and experiment.get("monitor"):
                summary.monitor, summary.mode = experiment["monitor"], experiment.get("mode")
                break
    return summary


# --- rendering ---------------------------------------------------------------------------------


def _number(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "nan"
    return (
        f"{value:.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:.3g}"
    )  # percents; small losses


def _duration(seconds: Any) -> str:
    if not _is_number(seconds):
        return ""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _short_value(value: str) -> str:
    """An override's value for display: long floats (Optuna's draws) to 4 significant digits."""
    if len(value) > 8:
        try:
            return f"{float(value):.4g}"
        except ValueError:
            pass
    return value


def header_lines(summary: SweepSummary) -> list[str]:
    """What the table's header says: sweep state, job counts, config, common overrides, monitor."""
    state = {
        "finished": "finished",
        "running": "running",
        "stopped": "stopped before its end (its process is gone: a failed job or an interruption)",
        "unknown": "unknown (no live process to check: a job counts as running while its folder "
        f"changed in the last {ACTIVE_WITHIN_S // 60} min)",
    }[summary.state]
    counts = ", ".join(
        f"{summary.count(s)} {s}"
        for s in ("done", "failed", "running", "incomplete")
        if summary.count(s)
    )
    counts = counts or "no job started yet"
    if summary.not_started:
        counts += f", {summary.not_started} not started"
    if summary.planned is not None:
        counts += f" ({summary.planned} planned)"
    lines = [f"sweep: {state}", f"jobs: {counts}"]
    sweeper = summary.sweeper or "unknown"
    lines.append(f"sweeper: {sweeper}" + (f", study {summary.study}" if summary.study else ""))
    if summary.config_name:
        lines.append(f"config: {summary.config_name}")
    lines.append("common overrides: " + (" ".join(summary.common) if summary.common else "none"))
    if summary.monitor:
        lines.append(f"monitor: {summary.monitor} ({summary.mode or '?'})")
    best = summary.best_job()
    if best is not None:
        varying = " ".join(f"{k}={v}" for k, v in best.varying.items())
        lines.append(
            f"best: job {best.job} ({_number(best.best)})" + (f": {varying}" if varying else "")
        )
    lines.append(
        f"{LEADERBOARD} @best: at the epoch of the best monitored value; @last: at the last epoch"
    )
    return lines


def _columns(summary: SweepSummary) -> list[str]:
    best = f"best {summary.monitor}" if summary.monitor else "best"
    columns = ["job", *summary.keys, "status"]
    if summary.monitor_per_job:
        columns.append("monitor")
    columns += [best, "epoch", f"{LEADERBOARD} @best", f"{LEADERBOARD} @last", "wall time"]
    if any(j.error for j in summary.jobs):
        columns.append("error")
    return columns


def _display_rows(summary: SweepSummary) -> list[list[str]]:
    rows = []
    with_error = any(j.error for j in summary.jobs)
    for job in summary.jobs:
        row = [str(job.job)]
        row += [_short_value(job.varying[k]) if k in job.varying else "" for k in summary.keys]
        row.append(job.status)
        if summary.monitor_per_job:
            row.append(job.monitor or "")
        row += [
            _number(job.best),
            "" if job.best_epoch is None else str(job.best_epoch),
            _number(job.leaderboard_at_best),
            _number(job.leaderboard_last),
            _duration(job.wall_time_s),
        ]
        if with_error:
            row.append(job.error or "")
        rows.append(row)
    return rows


CSV_FIELDS = [
    "status",
    "monitor",
    "mode",
    "best_value",
    "best_epoch",
    "val_leaderboard_at_best_epoch",
    "val_leaderboard_at_last_epoch",
    "wall_time_s",
    "error",
    "folder",
]


def format_csv(summary: SweepSummary) -> str:
    """One row per job: job, one column per varying override key (raw values), then CSV_FIELDS."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job", *summary.keys, *CSV_FIELDS])
    for job in summary.jobs:
        values = [
            job.status,
            job.monitor,
            job.mode,
            job.best,
            job.best_epoch,
            job.leaderboard_at_best,
            job.leaderboard_last,
            job.wall_time_s,
            job.error,
            job.folder.name,
        ]
        writer.writerow(
            [
                job.job,
                *(job.varying.get(k, "") for k in summary.keys),
                *("" if v is None else v for v in values),
            ]
        )
    return out.getvalue()


def format_markdown(summary: SweepSummary) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"# Sweep {summary.sweep_dir}", ""]
    lines += [f"- {cell(line)}" for line in header_lines(summary)]
    lines.append(
        f"- built {summary.built:%Y-%m-%d %H:%M:%S} (python -m mvfoul.sweeps summarize {summary.sweep_dir})"
    )
    lines.append("")
    columns = _columns(summary)
    lines.append("| " + " | ".join(cell(c) for c in columns) + " |")
    numeric = {"job", "epoch", "wall time"} | {
        c for c in columns if c.startswith("best") or c.startswith(LEADERBOARD)
    }
    lines.append("|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|")
    for row in _display_rows(summary):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_summary_files(summary: SweepSummary) -> tuple[Path, Path]:
    """Write ``sweep_summary.csv`` and ``sweep_summary.md`` into the sweep folder."""
    csv_path, md_path = summary.sweep_dir / SUMMARY_CSV, summary.sweep_dir / SUMMARY_MD
    try:
        atomic.write_text(csv_path, format_csv(summary), durable=False)
        atomic.write_text(md_path, format_markdown(summary), durable=False)
    except OSError as err:
        raise MvfoulError(
            f"cannot write the sweep summary into {summary.sweep_dir}: {err.strerror or err}"
        ) from err
    return csv_path, md_path


def print_summary(summary: SweepSummary, file: Any = None) -> None:
    """Print the header and the table (rich; plain text where the output is not a terminal)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    file = file or sys.stdout
    columns, rows = _columns(summary), _display_rows(summary)
    # In a terminal rich fits the table to it; in a log or a pipe, the table keeps its own width.
    natural = sum(max([len(c)] + [len(r[i]) for r in rows]) + 3 for i, c in enumerate(columns)) + 1
    width = None if file.isatty() else max(100, min(natural, 300))
    console = Console(file=file, width=width, highlight=False)
    table = Table(title=Text(f"Sweep {summary.sweep_dir}"), title_justify="left")
    for name in columns:
        right = name in ("job", "epoch", "wall time") or name.startswith(("best", LEADERBOARD))
        table.add_column(Text(name), justify="right" if right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text(v) for v in row))
    for line in header_lines(summary):
        console.print(Text(line), soft_wrap=True)
    console.print(table)


# --- the Hydra callback ------------------------------------------------------------------------


def _is_multirun(config: DictConfig) -> bool:
    from hydra.types import RunMode

    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


def _sweep_dir_of(config: DictConfig) -> Path:
    sweep_dir = Path(str(config.hydra.sweep.dir))
    return sweep_dir if sweep_dir.is_absolute() else Path(str(config.hydra.runtime.cwd)) / sweep_dir


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def _sqlite_path(storage: Any) -> Path | None:
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///") :].split("?", 1)[0]
        return Path(path) if path and path != ":memory:" else None
    return None


class SweepSummaryCallback(Callback):
    """Keeps ``sweep_summary.csv``/``.md`` of a ``--multirun`` up to date and prints it at the end.

    Registered in ``conf/config.yaml`` under ``hydra.callbacks``; does nothing in a single run.
    It also records what the table's statuses need: ``sweep_state.json`` in the sweep folder (the
    launching process, the planned job count, the end) and ``job_status.json`` in each job folder
    (completed or failed, with the error). Creates the folder of an Optuna SQLite storage. A
    problem here is logged as a warning and never stops the sweep.
    """

    def __init__(self, print_table: bool = True) -> None:
        self.print_table = print_table
        self._job_started: dict[str, float] = {}
        self._open_sweep: Path | None = None  # a sweep started here and not ended yet

    def _at_exit(self) -> None:
        """The process exits without on_multirun_end (a job failed, Ctrl-C): record that the sweep
        stopped, and leave a table that says so."""
        sweep_dir, self._open_sweep = self._open_sweep, None
        if sweep_dir is None:
            return
        try:
            record = _read_json(sweep_dir / SWEEP_STATE) or {}
            record["stopped"] = _now()
            atomic.write_text(
                sweep_dir / SWEEP_STATE, json.dumps(record, indent=2) + "\n", durable=False
            )
            write_summary_files(summarize_sweep(sweep_dir))
        except Exception:  # noqa: BLE001 - at exit there is no one left to tell
            pass

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = _sweep_dir_of(config)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            target = OmegaConf.select(config, "hydra.sweeper._target_")
            record: dict[str, Any] = {
                "host": socket.gethostname(),
                "started": _now(),
                "ended": None,
                "sweeper": target,
                "planned_jobs": _planned_jobs(config.hydra),
                "config_name": OmegaConf.select(config, "hydra.job.config_name"),
                "overrides": [
                    str(o) for o in OmegaConf.select(config, "hydra.overrides.task") or []
                ],
            }
            if target == OPTUNA_SWEEPER:
                record.update(self._prepare_optuna(config))
            hold_sweep_lock(sweep_dir)
            atomic.write_text(
                sweep_dir / SWEEP_STATE, json.dumps(record, indent=2) + "\n", durable=False
            )
            self._open_sweep = sweep_dir
            atexit.register(self._at_exit)
        except Exception as exc:  # noqa: BLE001 - bookkeeping never stops a sweep
            log.warning("sweep summary: could not record the sweep's start: %s", exc)

    @staticmethod
    def _prepare_optuna(config: DictConfig) -> dict[str, Any]:
        """Create the SQLite storage's folder (SQLite does not) and say what is optimised."""
        storage = OmegaConf.select(config, "hydra.sweeper.storage")
        study_name = OmegaConf.select(config, "hydra.sweeper.study_name")
        database = _sqlite_path(storage)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        direction = str(OmegaConf.select(config, "hydra.sweeper.direction"))
        monitor = OmegaConf.select(config, "experiment.monitor")
        mode = OmegaConf.select(config, "experiment.mode")
        log.info("optuna: study %r in %s, %s %s", study_name, storage, direction, monitor)
        if mode and not direction.lower().startswith(str(mode).lower()):
            log.warning(
                "optuna: hydra.sweeper.direction=%s but experiment.mode=%s: the search would "
                "look for the worst %s",
                direction,
                mode,
                monitor,
            )
        return {
            "study_name": study_name,
            "storage": _mask_password(str(storage)) if storage is not None else None,
            "objective": f"{direction} {monitor}",
        }

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_started[str(OmegaConf.select(config, "hydra.runtime.output_dir"))] = (
            time.monotonic()
        )

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        try:
            from hydra.core.utils import JobStatus

            job_dir = Path(str(config.hydra.runtime.output_dir))
            started = self._job_started.pop(str(job_dir), None)
            value = getattr(job_return, "_return_value", None)
            failed = job_return.status == JobStatus.FAILED
            record = {
                "status": "failed" if failed else "completed",
                "ended": _now(),
                "duration_s": None if started is None else round(time.monotonic() - started, 1),
                "return_value": value if _is_number(value) else None,
                "error": _error_line(value) if failed else None,
            }
            atomic.write_text(job_dir / JOB_STATUS, atomic.dumps_json(record), durable=False)
            write_summary_files(summarize_sweep(_sweep_dir_of(config)))
        except Exception as exc:  # noqa: BLE001 - bookkeeping never stops a sweep
            log.warning("sweep summary: could not update it after this job: %s", exc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = _sweep_dir_of(config)
            self._open_sweep = None
            record = _read_json(sweep_dir / SWEEP_STATE) or {}
            record["ended"] = _now()
            atomic.write_text(
                sweep_dir / SWEEP_STATE, json.dumps(record, indent=2) + "\n", durable=False
            )
            release_sweep_lock(sweep_dir)
            summary = summarize_sweep(sweep_dir)
            _, md_path = write_summary_files(summary)
            if self.print_table:
                print_summary(summary)
            log.info("sweep summary: %s (and %s)", md_path, SUMMARY_CSV)
        except Exception as exc:  # noqa: BLE001 - bookkeeping never stops a sweep
            log.warning("sweep summary: could not build it: %s", exc)


# --- the command -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mvfoul.sweeps", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="action", required=True)
    summarize = sub.add_parser(
        "summarize",
        help="build a sweep's table (finished, running or crashed): print it, write sweep_summary.csv/.md",
    )
    summarize.add_argument("sweep_dir", type=Path, help="multirun/<experiment.name>/<date_time>")
    summarize.add_argument(
        "-q", "--quiet", action="store_true", help="write the files without printing the table"
    )
    args = parser.parse_args(argv)
    try:
        summary = summarize_sweep(args.sweep_dir)
        if not args.quiet:
            print_summary(summary)
        csv_path, md_path = write_summary_files(summary)
        print(f"wrote {csv_path} and {md_path}")
    except MvfoulError as err:
        print(f"mvfoul: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
