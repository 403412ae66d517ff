"""SLURM preemption and time limits.

SLURM signals a job before killing it (``hydra/launcher=slurm`` asks for SIGUSR1 two minutes
ahead; submitit's default, SIGUSR2, works too). At the end of that step, every rank agreeing,
:class:`SlurmRequeue` flushes the logs, runs ``scontrol requeue`` and stops. The requeued job
(same id) finds its run folder again and resumes from ``last.ckpt`` as with
``experiment.resume=auto`` (:func:`mvfoul.slurm.requeued_slurm_job`): the interrupted epoch runs
again, and the run continues exactly. Lightning's own auto-requeue, which saves a mid-step
checkpoint from inside the signal handler, is switched off in favour of this.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from mvfoul.slurm import on_slurm, slurm_job_id
from mvfoul.training.loggers import flush_loggers

log = logging.getLogger(__name__)


def slurm_plugins() -> list[Any]:
    """Trainer plugins on SLURM: its environment without Lightning's own auto-requeue."""
    if not on_slurm():
        return []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


class SlurmRequeue(Callback):
    """Requeues the SLURM job on its warning signal (see the module docstring)."""

    def __init__(self) -> None:
        self._signalled: int | None = None
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        # A signal handler does as little as possible: the work happens at the next step's end.
        self._signalled = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            self._previous[sig] = signal.signal(sig, self._note)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not trainer.strategy.reduce_boolean_decision(self._signalled is not None, all=False):
            return
        if trainer.is_global_zero:
            flush_loggers(trainer)
            name = (
                signal.Signals(self._signalled).name
                if self._signalled
                else "a requeue signal on another rank"
            )
            job = slurm_job_id()
            command = ["scontrol", "requeue", str(job)]
            if shutil.which("scontrol") is None or job is None:
                log.error(
                    "SLURM sent %s but cannot requeue job %s: no scontrol on PATH; the job stops here",
                    name,
                    job,
                )
            else:
                run = subprocess.run(command, capture_output=True, text=True, timeout=60)
                if run.returncode:
                    log.error(
                        "SLURM sent %s: `%s` failed (%s); the job stops here",
                        name,
                        " ".join(command),
                        (run.stderr or run.stdout).strip()[:300],
                    )
                else:
                    log.warning(
                        "SLURM sent %s at epoch %d, step %d: requeued job %s; it resumes from the last epoch boundary "
                        "(checkpoints/last.ckpt, %d epoch(s) done) in this run folder",
                        name,
                        trainer.current_epoch,
                        trainer.global_step,
                        job,
                        trainer.current_epoch,
                    )
        trainer.strategy.barrier("mvfoul.requeue")
        # Not a failure: the job was requeued (submitit reads no result from this process, and
        # SLURM ends the job step anyway).
        raise SystemExit(0)
