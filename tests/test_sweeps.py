"""Sweep tables (mvfoul.sweeps) and the Optuna search (conf/hparams_search/optuna.yaml)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import SMALL_SYNTHETIC, compose_config, run_command, train_command
from mvfoul import sweeps
from mvfoul.errors import MvfoulError
from mvfoul.run_folder import LOCK_FILE

# quick_test on the small built-in dataset, one epoch of two batches: seconds per job.
QUICK = [
    "--config-name",
    "quick_test",
    *SMALL_SYNTHETIC,
    "training.max_epochs=1",
    "experiment.limit_train_batches=2",
]
TINY = [*QUICK, "experiment.limit_val_batches=1"]
SEARCH_KEYS = {
    "training.learning_rate",
    "model.dropout_rate",
    "loss.focal_gamma",
    "sampling.oversample_factor",
}


def sweep_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob(sweeps.SWEEP_STATE))


def read_csv(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / sweeps.SUMMARY_CSV, newline="") as f:
        return list(csv.DictReader(f))


def same(cell: str, value) -> bool:
    """A CSV cell holds exactly this summary.json value (NaN included, None as empty)."""
    if value is None:
        return cell == ""
    if isinstance(value, float) and math.isnan(value):
        return cell == "nan"
    return float(cell) == float(value)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("mvfoul: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory, cache_dir):
    """A real 2-job sweep, run once for the tests that read it."""
    cwd = tmp_path_factory.mktemp("lr-sweep")
    result = run_command(
        train_command("--multirun", *TINY, "training.learning_rate=1e-3,5e-4"),
        cwd=cwd,
        cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = sweep_folders(cwd / "multirun" / "quick_test")
    return result, sweep_dir


@pytest.mark.slow
def test_a_multirun_ends_with_its_table_written_and_printed(lr_sweep):
    result, sweep_dir = lr_sweep
    assert (sweep_dir / sweeps.SUMMARY_CSV).is_file() and (sweep_dir / sweeps.SUMMARY_MD).is_file()
    assert json.loads((sweep_dir / sweeps.SWEEP_STATE).read_text())["state"] == "finished"

    rows = read_csv(sweep_dir)
    assert [r["job"] for r in rows] == ["0", "1"]
    assert [r["training.learning_rate"] for r in rows] == [
        "0.001",
        "0.0005",
    ]  # the only varying override
    assert not any(k.startswith("dataset.") for k in rows[0])  # common ones are in the header
    for row in rows:
        summary = json.loads((sweep_dir / row["job"] / "summary.json").read_text())
        marker = json.loads((sweep_dir / row["job"] / sweeps.JOB_STATUS).read_text())
        assert marker["status"] == "finished" and marker["metric"] == summary["best"]["value"]
        best_epoch = summary["best"]["epoch"]
        assert row["status"] == "done" and row["monitor"] == summary["monitor"] == "val/sev_acc"
        assert same(row["best_value"], summary["best"]["value"])
        assert row["best_epoch"] == str(best_epoch)
        assert same(
            row["val_leaderboard_at_best_epoch"],
            summary["history"][str(best_epoch)]["val/leaderboard"],
        )
        assert same(
            row["val_leaderboard_at_last_epoch"], summary["final_metrics"]["val/leaderboard"]
        )
        assert same(row["wall_time_s"], summary["wall_time_s"])

    md = (sweep_dir / sweeps.SUMMARY_MD).read_text()
    assert "- sweep: finished" in md and "- jobs: 2 done (2 planned)" in md
    assert "- sweeper: basic" in md and "- config: quick_test" in md
    assert "- monitor: val/sev_acc (max)" in md and re.search(r"- best: job [01] \(", md)
    common = next(line for line in md.splitlines() if line.startswith("- common overrides: "))
    assert "dataset.frame_size=48" in common and "training.learning_rate" not in common
    assert "| job | training.learning_rate | status | best val/sev_acc |" in md
    # ... and printed at the end of the sweep.
    assert "sweep: finished" in result.stdout and f"Sweep {sweep_dir}" in result.stdout
    assert "training.learning_rate" in result.stdout and "done" in result.stdout


# Holds POSIX locks on the files named in argv (shared on the sweep's, exclusive on a job's), the
# way a live sweep process and a live job do, until it is killed.
HOLD_LOCKS = """
import fcntl, os, sys, time
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.lockf(fd, fcntl.LOCK_SH if path.endswith("sweep.lock") else fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def hold_locks(*paths: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCKS, *map(str, paths)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def sigkill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


@pytest.mark.slow
def test_a_crashed_or_running_sweep_is_summarized_from_what_exists(lr_sweep, tmp_path):
    sweep_dir = shutil.copytree(lr_sweep[1], tmp_path / "sweep")
    (sweep_dir / "1" / "summary.json").unlink()  # job 1 started and never finished
    (sweep_dir / "1" / sweeps.JOB_STATUS).write_text(json.dumps({"status": "started"}))
    half = sweep_dir / "2" / ".hydra"  # job 2: its overrides written, nothing else
    half.mkdir(parents=True)
    overrides = yaml.safe_load((sweep_dir / "0" / ".hydra" / "overrides.yaml").read_text())
    (half / "overrides.yaml").write_text(
        yaml.safe_dump(
            [o for o in overrides if "learning_rate" not in o] + ["training.learning_rate=0.0001"]
        )
    )
    (sweep_dir / "3").mkdir()  # job 3: a bare folder
    state_file = sweep_dir / sweeps.SWEEP_STATE
    record = json.loads(state_file.read_text())

    def statuses(state):
        state_file.write_text(json.dumps({**record, "state": state}))
        summary = sweeps.summarize_sweep(sweep_dir)
        return summary["state"], [j["status"] for j in summary["jobs"]]

    # The sweep reached its end: unfinished jobs were interrupted.
    assert statuses("finished") == ("finished", ["done", "incomplete", "incomplete", "incomplete"])
    # Said to run, but no process holds the sweep's lock: it was killed.
    assert statuses("running") == ("stopped", ["done", "incomplete", "incomplete", "incomplete"])
    # A live process holds the sweep's lock: the jobs yet to start run, but job 1, whose own
    # process is gone (its folder's lock is free), does not.
    sweep_process = hold_locks(sweep_dir / sweeps.SWEEP_LOCK)
    try:
        assert statuses("running") == ("running", ["done", "incomplete", "running", "running"])
        job_process = hold_locks(sweep_dir / "1" / LOCK_FILE)
        assert statuses("running")[1][1] == "running"
        sigkill(job_process)
        assert statuses("running")[1][1] == "incomplete"
        # A job that failed is failed, with its error, whatever the sweep's state.
        (sweep_dir / "2" / sweeps.JOB_STATUS).write_text(
            json.dumps({"status": "failed", "error": "boom", "duration_s": 3.0})
        )
        assert statuses("running") == ("running", ["done", "incomplete", "failed", "running"])
    finally:
        sigkill(sweep_process)
    assert statuses("running") == ("stopped", ["done", "incomplete", "failed", "incomplete"])

    summary = sweeps.summarize_sweep(sweep_dir)
    assert summary["planned"] == 2
    assert [j["varying"] for j in summary["jobs"]] == [
        {"training.learning_rate": "0.001"},
        {"training.learning_rate": "0.0005"},
        {"training.learning_rate": "0.0001"},
        {},
    ]
    assert summary["jobs"][2]["error"] == "boom"

    # The command rebuilds the files of any sweep folder.
    for name in (sweeps.SUMMARY_CSV, sweeps.SUMMARY_MD):
        (sweep_dir / name).unlink()
    result = run_command(
        ["-m", "mvfoul.sweeps", "summarize", str(sweep_dir)], cwd=tmp_path, cache=tmp_path
    )
    assert result.returncode == 0, result.stderr
    rows = read_csv(sweep_dir)
    assert [r["status"] for r in rows] == ["done", "incomplete", "failed", "incomplete"]
    md = (sweep_dir / sweeps.SUMMARY_MD).read_text()
    assert "- sweep: stopped" in md and "- jobs: 1 done, 1 failed, 2 incomplete" in md
    assert "boom" in md and "boom" in result.stdout
    assert f"wrote {sweep_dir / sweeps.SUMMARY_CSV}" in result.stdout


@pytest.mark.slow
def test_a_resumed_job_is_not_done_until_it_finishes_again(lr_sweep, tmp_path):
    """Relaunched into the same folder, a job restarts beside its earlier run's summary.json: the
    table believes that only once the job returns again."""
    sweep_dir = shutil.copytree(lr_sweep[1], tmp_path / "sweep")
    (sweep_dir / "0" / sweeps.JOB_STATUS).write_text(json.dumps({"status": "started"}))
    sweep_process = hold_locks(sweep_dir / sweeps.SWEEP_LOCK, sweep_dir / "0" / LOCK_FILE)
    state_file = sweep_dir / sweeps.SWEEP_STATE
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "state": "running"}))
    try:
        row = sweeps.summarize_sweep(sweep_dir)["jobs"][0]
        assert row["status"] == "running" and row["best_value"] is None
    finally:
        sigkill(sweep_process)
    assert [j["status"] for j in sweeps.summarize_sweep(sweep_dir)["jobs"]] == [
        "incomplete",
        "done",
    ]


@pytest.mark.slow
def test_a_sweep_killed_mid_job_shows_running_then_stopped(tmp_path, cache_dir):
    """A real sweep, SIGKILLed (with its DataLoader workers) while its first job trains."""
    env = {**os.environ, "MVFOUL_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    command = train_command(
        "--multirun", *QUICK, "training.max_epochs=50", "training.learning_rate=1e-3,5e-4"
    )
    sweep = subprocess.Popen(
        [sys.executable, *command],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob(f"multirun/*/*/0/{sweeps.JOB_STATUS}")):
            assert sweep.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        (sweep_dir,) = sweep_folders(tmp_path / "multirun")
        summary = sweeps.summarize_sweep(sweep_dir)
        assert summary["state"] == "running" and [j["status"] for j in summary["jobs"]] == [
            "running"
        ]
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    summary = sweeps.summarize_sweep(sweep_dir)
    assert summary["state"] == "stopped" and [j["status"] for j in summary["jobs"]] == [
        "incomplete"
    ]
    assert "1 incomplete, 1 not started (2 planned)" in sweeps.format_markdown(summary)


def test_summarize_says_in_one_line_what_a_folder_is_when_it_is_not_a_sweep(tmp_path, capsys):
    result = run_command(
        ["-m", "mvfoul.sweeps", "summarize", str(tmp_path)], cwd=tmp_path, cache=tmp_path
    )
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert (
        f"{tmp_path} is not a sweep folder" in line
        and "multirun/<experiment.name>/<date_time>/" in line
    )
    assert not list(tmp_path.iterdir())  # nothing written

    sweep = tmp_path / "multirun" / "demo" / "2026-01-01_00-00-00"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "file.txt").write_text("x")
    cases = {
        tmp_path / "nope": "no such folder",
        tmp_path / "file.txt": "is a file, not a sweep folder",
        sweep / "0": f"is one job of a sweep: give the sweep folder, {sweep}",
        sweep.parent: f"holds 1 sweep(s), not jobs: give one of them, e.g. the latest, {sweep}",
    }
    for folder, expected in cases.items():
        with pytest.raises(MvfoulError, match="^" + re.escape(str(folder))):
            sweeps.summarize_sweep(folder)
        assert sweeps.main(["summarize", str(folder)]) == 2
        assert expected in one_error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_a_failing_job_leaves_a_table_saying_so(tmp_path, cache_dir):
    """Hydra's basic sweeper runs the other jobs, then stops with the failure: the table that the
    callback kept up to date says which job failed and why, and that the sweep stopped."""
    result = run_command(
        train_command("--multirun", *TINY, "training.learning_rate=-1,1e-3"),
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert result.returncode != 0
    assert "training.learning_rate: -1.0 is out of range" in one_error_line(result.stderr)
    (sweep_dir,) = sweep_folders(tmp_path / "multirun")
    rows = read_csv(sweep_dir)  # nobody ran `summarize`: the callback wrote it
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("1", "done")]
    assert "training.learning_rate: -1.0 is out of range" in rows[0]["error"]
    assert "- sweep: stopped" in (sweep_dir / sweeps.SUMMARY_MD).read_text()
    marker = json.loads((sweep_dir / "0" / sweeps.JOB_STATUS).read_text())
    assert marker["status"] == "failed" and "out of range" in marker["error"]


# --- Optuna --------------------------------------------------------------------------------------


def needs_optuna():
    pytest.importorskip(
        "hydra_plugins.hydra_optuna_sweeper",
        reason="the optuna extra is not installed: pip install -e '.[optuna]'",
    )


def test_the_optuna_search_config_composes_with_a_stable_storage():
    needs_optuna()
    cfg = compose_config("quick_test", ["hparams_search=optuna"])
    assert (cfg.experiment.monitor, cfg.experiment.mode) == ("val/leaderboard", "max")
    from hydra import compose, initialize_config_dir

    from mvfoul.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose("quick_test", ["hparams_search=optuna"], return_hydra_config=True).hydra
    sweeper = hydra_cfg.sweeper
    assert sweeper._target_.endswith(".OptunaSweeper")
    assert sweeper.direction == "maximize" and sweeper.study_name == "quick_test"
    assert (
        sweeper.storage == f"sqlite:///{os.getcwd()}/optuna/quick_test.db"
    )  # no timestamp: every launch finds it
    assert set(sweeper.params) == SEARCH_KEYS


def test_an_optuna_direction_against_the_monitor_mode_is_warned_about(tmp_path, caplog):
    needs_optuna()
    from hydra import compose, initialize_config_dir

    from mvfoul.paths import CONF_DIR

    overrides = [
        "hparams_search=optuna",
        "experiment.monitor=val/loss",
        "experiment.mode=min",
        "hydra.sweeper.direction=maximize",  # set by hand, against the mode
        f"hydra.sweep.dir={tmp_path}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("quick_test", overrides, return_hydra_config=True)
    cfg.hydra.runtime.cwd = str(tmp_path)
    callback = sweeps.SweepSummaryCallback()
    callback.on_multirun_start(cfg)
    callback.on_multirun_end(cfg)
    assert "hydra.sweeper.direction=maximize but experiment.mode=min" in caplog.text
    assert "look for the worst val/loss" in caplog.text


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "ignore:Deprecated API features detected"
)  # optuna 2.10 on SQLAlchemy 1.4
def test_an_optuna_search_relaunched_resumes_the_same_study(tmp_path, cache_dir):
    needs_optuna()
    import optuna

    # No validation batch limit here: on one batch some class is absent, val/leaderboard is NaN
    # (as the official evaluator gives it) and a trial with no value counts as failed.
    command = train_command(
        "--multirun",
        *QUICK,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.study_name=resume_test",
    )
    first = run_command(command, cwd=tmp_path, cache=cache_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    time.sleep(1.1)  # the next sweep folder's name is the time to the second
    second = run_command(command, cwd=tmp_path, cache=cache_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Using an existing study with name 'resume_test'" in second.stdout + second.stderr

    database = tmp_path / "optuna" / "resume_test.db"
    assert database.is_file()
    study = optuna.load_study(study_name="resume_test", storage=f"sqlite:///{database}")
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(set(t.params) == SEARCH_KEYS for t in trials)

    sweep_dirs = sweep_folders(tmp_path / "multirun" / "quick_test")
    assert len(sweep_dirs) == 2
    jobs = [sweep_dir / str(n) for sweep_dir in sweep_dirs for n in (0, 1)]
    for trial, job in zip(trials, jobs):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["monitor"] == "val/leaderboard"
        assert trial.value == summary["best"]["value"]
        overrides = dict(
            o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        )
        assert float(overrides["training.learning_rate"]) == trial.params["training.learning_rate"]
    for sweep_dir in sweep_dirs:
        rows = read_csv(sweep_dir)
        assert [r["status"] for r in rows] == ["done", "done"] and SEARCH_KEYS <= set(rows[0])
        md = (sweep_dir / sweeps.SUMMARY_MD).read_text()
        assert f"sweeper: optuna, study resume_test in sqlite:///{database}" in md
