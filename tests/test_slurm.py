"""Clusters: Hydra's submitit launcher (for real with ``submitit_local``; the SLURM config as
composed), and a SLURM job warned before its time limit, requeued, and resumed exactly. There is
no SLURM here: the job's variables are set by hand and ``scontrol`` is a stand-in on ``PATH``
that records how it was called."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_long_runs import assert_same_epochs, assert_same_rows, kill_after, metrics_rows, summary

from conftest import LONG, SMALL_SYNTHETIC, compose_config, run_command, train_command

pytest.importorskip(
    "hydra_plugins.hydra_submitit_launcher",
    reason="the submitit launcher is not installed (pip install -e '.[slurm]')",
)

SLURM_JOB = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "mvfoul",
    "SLURM_NTASKS": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
}


def test_the_slurm_launcher_asks_for_one_task_per_gpu_on_every_node():
    from hydra import compose, initialize_config_dir

    from mvfoul.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "system=multi_gpu",
                "system.gpus=4",
                "system.num_nodes=2",
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert (
        launcher.partition == "gpu"
        and launcher.timeout_min > 0
        and launcher.cpus_per_task > 0
        and launcher.mem_gb > 0
    )
    assert launcher.additional_parameters.signal == f"USR1@{launcher.signal_delay_s}"


def test_under_slurm_the_run_folder_is_named_by_the_job(monkeypatch):
    from mvfoul.slurm import requeued_slurm_job, run_stamp

    for name, value in SLURM_JOB.items():
        monkeypatch.setenv(name, value)
    assert run_stamp() == "slurm-4242" and requeued_slurm_job() == 0
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert requeued_slurm_job() == 2
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert run_stamp() == "slurm-77_3"
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation is not a batch job
    assert run_stamp() != "slurm-77_3" and requeued_slurm_job() == 0
    assert compose_config("quick_test").experiment.name == "quick_test"  # and configs still compose


@pytest.mark.slow
def test_submitit_local_runs_each_job_for_real(tmp_path, cache_dir):
    result = run_command(
        train_command(
            "--multirun",
            "--config-name",
            "quick_test",
            "hydra/launcher=submitit_local",
            *SMALL_SYNTHETIC,
            "training.max_epochs=1",
            "experiment.test_after_fit=false",
            "training.learning_rate=1e-3,2e-3",
            "experiment.name=local",
        ),
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent.parent for p in (tmp_path / "multirun").rglob(".hydra/config.yaml"))
    assert [j.name for j in jobs] == ["0", "1"]
    rates = sorted(
        yaml.safe_load((j / ".hydra" / "config.yaml").read_text())["training"]["learning_rate"]
        for j in jobs
    )
    assert rates == [1e-3, 2e-3]
    assert all(json.loads((j / "summary.json").read_text())["epochs_completed"] == 1 for j in jobs)
    assert list((jobs[0].parent / ".submitit").glob("*/*_result.pkl"))  # submitit ran them


@pytest.fixture
def stand_in_scontrol(tmp_path) -> tuple[dict[str, str], Path]:
    """A fake ``scontrol`` first on PATH; returns the job's environment and the file of its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls.txt"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    return {**SLURM_JOB, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, calls


@pytest.mark.slow
def test_a_warned_slurm_job_requeues_itself_and_the_requeued_job_resumes_exactly(
    tmp_path, cache_dir, stand_in_scontrol
):
    env, calls = stand_in_scontrol
    reference = run_command(
        train_command(*LONG, "hydra.run.dir=uninterrupted"), cwd=tmp_path, cache=cache_dir
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    run = tmp_path / "outputs" / "quick_test" / "slurm-4242"  # named by the job, not the clock
    log = tmp_path / "first_attempt.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, *train_command(*LONG)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env, "MVFOUL_CACHE_DIR": str(cache_dir)},
        )
        kill_after(process, run / "checkpoints" / "last.ckpt", signal_to_send=signal.SIGUSR1)
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]  # requeued, not failed
    assert calls.read_text().split() == ["requeue", "4242"]
    assert "SLURM sent SIGUSR1" in output and "requeued job 4242" in output
    assert not (run / "summary.json").exists()

    requeued = run_command(
        train_command(*LONG), cwd=tmp_path, cache=cache_dir, env={**env, "SLURM_RESTART_COUNT": "1"}
    )
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert (
        "SLURM restarted this job (1 time(s)): continuing its run"
        in requeued.stdout + requeued.stderr
    )
    assert_same_epochs(summary(tmp_path / "uninterrupted"), summary(run))
    assert_same_rows(metrics_rows(tmp_path / "uninterrupted"), metrics_rows(run))
