"""Where this process runs under SLURM: the job, its requeues, and the run folder name.
Light on purpose (no torch, no Lightning): ``${mvfoul_stamp:}`` uses it while Hydra composes."""

from __future__ import annotations

import os
import time


def on_slurm() -> bool:
    """Whether this process is a task of a SLURM batch job (not an interactive shell's)."""
    interactive = os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive")
    return bool(os.environ.get("SLURM_JOB_ID")) and not interactive


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` needs: ``<array job>_<task>`` for an array job."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeued_slurm_job() -> int:
    """How many times SLURM has restarted this job (``SLURM_RESTART_COUNT``; 0 for a first run)."""
    value = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(value) if on_slurm() and value.isdigit() else 0


def run_stamp() -> str:
    """The last part of a default run or sweep folder name: the date and time, or under SLURM the
    job id, so that every task of the job, and the job after a requeue, use the same folder."""
    if on_slurm():
        return f"slurm-{slurm_job_id()}"
    return time.strftime("%Y-%m-%d_%H-%M-%S")
