"""Sweep tables: ``sweep_summary.csv`` and ``.md`` in a ``--multirun``'s folder, a row per job,
read from each job's ``job_status.json`` and ``summary.json`` and the sweep's ``sweep_state.json``.
A killed process writes nothing: ``started`` and ``running`` hold only while the job's
``.mvfoul.lock`` or the sweep's ``.mvfoul.sweep.lock`` is held (POSIX locks die with their process).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import errno
import fcntl
import io
import json
import logging
import math
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mvfoul import atomic
from mvfoul.cli import explain
from mvfoul.errors import MvfoulError
from mvfoul.run_folder import LOCK_FILE, is_secondary_process

SUMMARY_CSV, SUMMARY_MD = "sweep_summary.csv", "sweep_summary.md"
SWEEP_STATE = "sweep_state.json"
JOB_STATUS = "job_status.json"
SWEEP_LOCK = ".mvfoul.sweep.lock"
LB = "val/leaderboard"
CSV_FIELDS = "status monitor mode best_value best_epoch val_leaderboard_at_best_epoch val_leaderboard_at_last_epoch wall_time_s error folder".split()
HINT = "expected multirun/<experiment.name>/<date_time>/, holding multirun.yaml and numbered job folders"
STATUSES = ("done", "failed", "running", "incomplete")
HEADINGS = {
    "best_value": "best",
    "best_epoch": "epoch",
    "val_leaderboard_at_best_epoch": f"{LB} @best",
    "val_leaderboard_at_last_epoch": f"{LB} @last",
    "wall_time_s": "wall time",
}
log = logging.getLogger(__name__)
STOPPED = "stopped before its end (its process is gone: a failed job or an interruption)"


def _json(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError, TypeError):  # not written yet, or not ours
        return dict(json.loads(path.read_text(encoding="utf-8")))
    return {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _locked(path: Path) -> bool:
    """Whether another live process holds a POSIX lock on ``path`` (never ask about this one's:
    closing the probe's descriptor would drop it)."""
    with contextlib.suppress(OSError):  # a lock file never made was never held
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            return err.errno in (errno.EAGAIN, errno.EACCES)
        finally:
            os.close(fd)
    return False


def _is_sweep(path: Path) -> bool:
    found = [path / "multirun.yaml", path / SWEEP_STATE, *path.glob("[0-9]*/.hydra")]
    return any(p.exists() for p in found)


def _check_sweep_dir(path: Path) -> None:
    """Raise one line saying what ``path`` is when it is not a sweep folder."""
    if _is_sweep(path):
        return
    if not path.exists():
        raise MvfoulError(f"{path}: no such folder; {HINT}")
    job = (path / ".hydra").is_dir()
    inside = sorted(filter(_is_sweep, path.glob("*")))
    if job and _is_sweep(path.parent):
        what = f"is one job of a sweep: give the sweep folder, {path.parent}"
    elif inside:
        what = f"holds {len(inside)} sweep(s), not jobs: give one of them, e.g. the latest, {inside[-1]}"
    elif path.is_file():
        what = f"is a file, not a sweep folder; {HINT}"
    elif job:
        what = f"is a single run (made without --multirun), not a sweep; {HINT}"
    else:
        what = f"is not a sweep folder; {HINT}"
    raise MvfoulError(f"{path} {what}")


def read_job(folder: Path, sweep_running: bool) -> dict[str, Any]:
    """A job's row: ``job``, ``overrides`` and the CSV_FIELDS, from its folder."""
    overrides = None
    with contextlib.suppress(OSError, yaml.YAMLError):  # Hydra writes them as the job starts
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text("utf-8"))
    marker = _json(folder / JOB_STATUS)
    status, error = marker.get("status"), marker.get("error")
    # A resumed job's folder holds its earlier run's summary.json: believed once the job returns.
    summary = _json(folder / "summary.json") if status != "started" else {}
    best = summary.get("best") or {}
    at_best = (summary.get("history") or {}).get(str(best.get("epoch"))) or {}
    if status == "failed":
        pass  # its marker says so, whatever else its folder holds
    elif summary:
        status = "done"
    elif status == "finished":
        status, error = "incomplete", "the job returned but wrote no summary.json"
    else:  # running while its process holds its folder's lock; before it starts, the sweep's
        running = _locked(folder / LOCK_FILE) if status == "started" else sweep_running
        status = "running" if running else "incomplete"
    return {  # CSV_FIELDS, then the job's number and overrides
        "status": status,
        "monitor": summary.get("monitor"),
        "mode": summary.get("mode"),
        "best_value": best.get("value"),
        "best_epoch": best.get("epoch"),
        "val_leaderboard_at_best_epoch": at_best.get(LB),
        "val_leaderboard_at_last_epoch": (summary.get("final_metrics") or {}).get(LB),
        "wall_time_s": summary.get("wall_time_s", marker.get("duration_s")),
        "error": error,
        "folder": folder.name,
        "job": int(folder.name),
        "overrides": overrides if isinstance(overrides, list) else None,
    }


def summarize_sweep(sweep_dir: str | Path, state: str | None = None) -> dict[str, Any]:
    """A sweep folder's table, whether it finished, runs or crashed (MvfoulError if it is none)."""
    sweep_dir = Path(sweep_dir)
    _check_sweep_dir(sweep_dir)
    record = _json(sweep_dir / SWEEP_STATE)
    if state is None:
        state = str(record.get("state") or "unknown")
        if state == "running" and not _locked(sweep_dir / SWEEP_LOCK):
            state = "stopped"  # a running sweep whose lock is free: its process died
    numbered = sorted((int(c.name), c) for c in sweep_dir.iterdir() if c.name.isdigit())
    jobs = [read_job(folder, state == "running") for _, folder in numbered]
    known = [j["overrides"] for j in jobs if j["overrides"] is not None]
    common = [o for o in known[0] if all(o in other for other in known)] if known else []
    # A column for each key of the overrides not common to all, in order of appearance.
    keys = list(
        dict.fromkeys(o.split("=", 1)[0] for found in known for o in found if o not in common)
    )
    for job in jobs:
        pairs = (override.partition("=") for override in job["overrides"] or [])
        job["varying"] = {key: value for key, _, value in pairs if key in keys}
        job.update(job["varying"])
    # The metric the finished jobs monitored (None: they differ); until one has, the configured one.
    seen = [(j["monitor"], j["mode"]) for j in jobs if j["monitor"]]
    seen = seen or [(record.get("monitor"), record.get("mode"))]
    monitor, mode = seen[0] if len({m for m, _ in seen}) == 1 else (None, None)
    record.update(dir=sweep_dir, state=state, jobs=jobs, common=common, keys=keys)
    return {**record, "monitor": monitor, "mode": mode}


def _cell(value: Any, field: str) -> str:
    """A value as the table shows it."""
    if isinstance(value, str) and len(value) > 8 and field not in CSV_FIELDS:  # Optuna's draws
        with contextlib.suppress(ValueError):
            return f"{float(value):.4g}"
    if not _is_number(value) or field == "best_epoch":
        return "" if value is None else str(value)
    if field == "wall_time_s" and value < 60:
        return f"{value:.1f} s"
    if field == "wall_time_s":
        minutes, secs = divmod(round(value), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:.3g}"  # % or a loss


def format_markdown(sweep: dict[str, Any]) -> str:
    jobs, keys, monitor, mode = sweep["jobs"], sweep["keys"], sweep["monitor"], sweep["mode"]
    statuses = [j["status"] for j in jobs]
    counts = [f"{statuses.count(s)} {s}" for s in STATUSES if s in statuses]
    planned = sweep.get("planned") or 0  # 0: not known
    if planned > len(jobs):
        counts.append(f"{planned - len(jobs)} not started")
    text = ", ".join(counts) or "no job started yet"
    if planned:
        text += f" ({planned} planned)"
    scored = [j for j in jobs if j["status"] == "done" and _is_number(j["best_value"])]
    scored.sort(key=lambda j: j["best_value"], reverse=mode != "min")
    best = scored[0] if len({j["monitor"] for j in scored}) == 1 else None  # one metric's values
    state = STOPPED if sweep["state"] == "stopped" else sweep["state"]
    head = [f"sweep: {state}", f"jobs: {text}", f"sweeper: {sweep.get('sweeper') or 'unknown'}"]
    if sweep.get("config"):
        head.append(f"config: {sweep['config']}")
    head.append("common overrides: " + (" ".join(sweep["common"]) or "none"))
    if monitor:
        head.append(f"monitor: {monitor} ({mode or '?'})")
    if best:
        varying = "".join(f" {k}={v}" for k, v in best["varying"].items())
        best_line = f"best: job {best['job']} ({_cell(best['best_value'], '')}):{varying}"
        head.append(best_line.rstrip(":"))  # no colon when nothing varies
    head += [
        f"{LB} @best: at the epoch of the best monitored value; @last: at the last epoch",
        f"built {datetime.now():%Y-%m-%d %H:%M:%S} (python -m mvfoul.sweeps summarize {sweep['dir']})",
    ]
    fields = [*keys, "status"]
    if monitor is None and any(j["monitor"] for j in jobs):  # jobs monitored different metrics
        fields.append("monitor")
    fields += HEADINGS
    if any(j["error"] for j in jobs):
        fields.append("error")
    titles = {**HEADINGS, "best_value": f"best {monitor}" if monitor else "best"}
    rows = [["job", *(titles.get(f, f) for f in fields)]]
    # The alignment row: the job number and the HEADINGS columns (numbers) right-aligned.
    rows += [["---:", *("---:" if f in HEADINGS else "---" for f in fields)]]
    rows += [[str(j["job"]), *(_cell(j.get(f, ""), f) for f in fields)] for j in jobs]
    lines = [f"# Sweep {sweep['dir']}", "", *(f"- {h}" for h in head), ""]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_summary_files(sweep: dict[str, Any]) -> str:
    """Write ``sweep_summary.csv`` (raw values) and ``.md``; return the Markdown."""
    out = io.StringIO()
    fields = ["job", *sweep["keys"], *CSV_FIELDS]
    writer = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(sweep["jobs"])
    atomic.write_text(sweep["dir"] / SUMMARY_CSV, out.getvalue(), durable=False)
    markdown = format_markdown(sweep)
    atomic.write_text(sweep["dir"] / SUMMARY_MD, markdown, durable=False)
    return markdown


class SweepSummaryCallback(Callback):
    """Writes the sweep's record and the jobs' markers, the table after every job, and prints it at
    the end. (Hydra turns a callback's error into a warning: the bookkeeping never stops a sweep.)"""

    _sweep: tuple[Path, int] | None = None  # (folder, lock) of a sweep started here, not ended
    _job_started = datetime.now()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        sweeper = str(hydra.sweeper._target_).rsplit(".", 1)[-1]  # the class name
        sweeper = {"BasicSweeper": "basic", "OptunaSweeper": "optuna"}.get(sweeper, sweeper)
        record = {
            "state": "running",
            "config": hydra.job.config_name,
            "sweeper": sweeper,
            "monitor": OmegaConf.select(config, "experiment.monitor"),
            "mode": OmegaConf.select(config, "experiment.mode"),
        }
        if sweeper == "optuna":
            storage = str(hydra.sweeper.storage or "memory (not kept)")
            if storage.startswith("sqlite:///"):  # SQLite makes its file, not the folder
                database = Path(storage.removeprefix("sqlite:///").split("?")[0])
                database.parent.mkdir(parents=True, exist_ok=True)
            storage = re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", storage)  # no password
            record["sweeper"] = f"optuna, study {hydra.sweeper.study_name} in {storage}"
            record["planned"] = hydra.sweeper.n_trials
            direction, mode = str(hydra.sweeper.direction), str(record["mode"])
            if not direction.lower().startswith(mode.lower()):  # "maximize" goes with "max"
                log.warning(
                    f"optuna: hydra.sweeper.direction={direction} but experiment.mode={mode}: "
                    f"the search would look for the worst {record['monitor']}"
                )
        elif sweeper == "basic":
            # The cross product of the swept values; the command line replaces sweeper.params.
            args = [f"{k}={v}" for k, v in (hydra.sweeper.params or {}).items()]
            with contextlib.suppress(Exception):  # a count it cannot make (a glob) is left out
                parsed = OverridesParser.create().parse_overrides(args + list(hydra.overrides.task))
                swept = {o.get_key_element(): o for o in parsed if o.is_sweep_override()}
                sizes = [len(list(o.sweep_string_iterator())) for o in swept.values()]
                record["planned"] = math.prod(sizes)
        sweep_dir = Path(str(hydra.runtime.cwd)) / str(hydra.sweep.dir)  # an absolute one wins
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # Shared: several launches into one sweep folder may all hold it.
        lock = os.open(sweep_dir / SWEEP_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(lock, fcntl.LOCK_SH)
        atomic.write_text(sweep_dir / SWEEP_STATE, atomic.dumps_json(record), durable=False)
        self._sweep = sweep_dir, lock
        atexit.register(self._at_exit)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_started = datetime.now()
        self._mark(config, status="started")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # Not .return_value: for a failed job it prints Hydra's error line a second time.
        value = job_return._return_value
        marker = {"status": "finished", "metric": value if _is_number(value) else None}
        if job_return.status == JobStatus.FAILED:
            error = explain(value) or f"{type(value).__name__}: {value}"
            marker = {"status": "failed", "error": " ".join(error.split())[:500]}
        duration = round((datetime.now() - self._job_started).total_seconds(), 1)
        if self._mark(config, **marker, duration_s=duration) and self._sweep is not None:
            # Written from the sweep's process (or its job's): running, no lock to ask.
            write_summary_files(summarize_sweep(self._sweep[0], "running"))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._sweep is None:
            return
        sweep_dir, lock = self._sweep
        self._sweep = None
        os.close(lock)  # releases the sweep's lock
        record = {**_json(sweep_dir / SWEEP_STATE), "state": "finished"}
        atomic.write_text(sweep_dir / SWEEP_STATE, atomic.dumps_json(record), durable=False)
        print("\n" + write_summary_files(summarize_sweep(sweep_dir)), end="")

    def _at_exit(self) -> None:
        """The process exits before the sweep's end (a failed job, Ctrl-C): the table says so."""
        with contextlib.suppress(Exception):  # at exit there is no one left to tell
            if self._sweep is not None:
                write_summary_files(summarize_sweep(self._sweep[0], "stopped"))

    @staticmethod
    def _mark(config: DictConfig, **marker: Any) -> bool:
        """Write the job's marker: in a --multirun job's main process only (not its DDP ranks)."""
        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN or is_secondary_process():
            return False
        marker["time"] = datetime.now().isoformat(timespec="seconds")
        job_dir = Path(str(config.hydra.runtime.output_dir))
        atomic.write_text(job_dir / JOB_STATUS, atomic.dumps_json(marker), durable=False)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvfoul.sweeps", description="Sweep tables.")
    sub = parser.add_subparsers(dest="action", required=True)
    summarize = sub.add_parser("summarize", help="a sweep's table, finished, running or crashed")
    summarize.add_argument("sweep_dir", type=Path, help="multirun/<experiment.name>/<date_time>")
    summarize.add_argument("-q", "--quiet", action="store_true", help="write without printing")
    args = parser.parse_args(argv)
    try:
        markdown = write_summary_files(summarize_sweep(args.sweep_dir))
    except MvfoulError as err:
        print(f"mvfoul: error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(markdown)
    print(f"wrote {args.sweep_dir / SUMMARY_CSV} and {args.sweep_dir / SUMMARY_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
