"""The callbacks of mvfoul's Trainer, besides unfreezing (``freezing.py``), the checkpoint
writers (``checkpoints.py``) and the epoch history (``summary.py``)."""

from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar
from omegaconf import DictConfig

from mvfoul.data.sampling import expected_distribution
from mvfoul.errors import DivergenceError
from mvfoul.labels import HEAD_CLASSES, HEAD_METRIC_PREFIX, HEADS
from mvfoul.slurm import slurm_job_id
from mvfoul.training.loggers import flush_loggers

log = logging.getLogger(__name__)


class EpochMetricsOnEveryRank(Callback):
    """Lightning all-reduces a ``sync_dist`` metric when the metrics are first read. At a training
    epoch's end that is the progress bar, on rank zero alone, while the other ranks go on to the
    module's own collectives: a hang. Read first here, on every rank, the values are cached."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            trainer.callback_metrics  # noqa: B018 - the read is the point


class ThrottledProgressBar(RichProgressBar):
    """Redrawn a few times a second, not after every batch (nor by Lightning's 100 Hz refresh
    thread): with the tiny model's ~12 ms CPU steps, those redraws cost 7% of the training time
    (benchmarks/train_step.py)."""

    def __init__(self, redraws_per_second: int = 4) -> None:
        super().__init__(refresh_rate=redraws_per_second, leave=True)
        self._interval = 1.0 / redraws_per_second
        self._last_redraw = 0.0

    def _due(self, batch_idx: int, total: int | float) -> bool:
        now = time.monotonic()
        if now - self._last_redraw >= self._interval or batch_idx + 1 >= total:
            self._last_redraw = now
            return True
        return False

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self.is_disabled and self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # A disabled bar (DDP ranks other than zero) never learns which loader is running.
        if not self.is_disabled and self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(
                trainer, pl_module, outputs, batch, batch_idx, dataloader_idx
            )


class DivergenceGuard(Callback):
    """``training.stop_on_divergence``: stop at the first non-finite training loss, or non-finite
    weights before each validation and ``last.ckpt`` (a step after the last finite loss can break
    them). Not gradients: 16-bit AMP has non-finite ones normally (the scaler skips those steps)."""

    def __init__(self, training: DictConfig, precision: str) -> None:
        self.learning_rate = training.learning_rate
        self.gradient_clip_val = training.gradient_clip_val
        self.precision = precision

    def _raise(self, trainer: L.Trainer, what: str, value: str) -> None:
        clip = (
            f"lower training.gradient_clip_val (now {self.gradient_clip_val:g})"
            if self.gradient_clip_val
            else "set training.gradient_clip_val (now off), e.g. 1.0"
        )
        fixes = [f"lower training.learning_rate (now {self.learning_rate:g})", clip]
        if not str(self.precision).startswith(("32", "64")):
            fixes.append(f"train in system.precision=32-true (now {self.precision})")
        raise DivergenceError(
            f"training diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: "
            f"{what} is {value}; {', '.join(fixes[:-1])} or {fixes[-1]}; "
            "training.stop_on_divergence=false trains on regardless"
        )

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = (outputs or {}).get("loss")  # None or {} for a step Lightning skipped
        if loss is None:
            return
        finite = bool(torch.isfinite(loss).all())
        # Every rank must reach the same decision at the same step, or the others would wait in
        # the next all-reduce forever.
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):
            value = "non-finite on another process" if finite else str(loss.item())
            self._raise(trainer, "the training loss", value)

    def _check_weights(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> None:
        broken = [n for n, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        if not trainer.strategy.reduce_boolean_decision(not broken, all=True):
            shown = ", ".join(broken[:3]) + (" ..." if len(broken) > 3 else "")
            what = f"the weights {when} ({len(broken)} parameter tensor(s), e.g. {shown})"
            self._raise(trainer, what, "non-finite")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check_weights(trainer, pl_module, "before validation")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._check_weights(trainer, pl_module, "at the end of the previous epoch")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_weights(trainer, pl_module, "at the end of training")


class SlurmRequeue(Callback):
    """On SLURM's warning signal (SIGUSR1 from ``hydra/launcher=slurm``, or submitit's SIGUSR2),
    at that step's end on every rank: flush the logs, ``scontrol requeue`` and stop. The requeued
    job resumes from ``last.ckpt`` (:func:`mvfoul.slurm.requeued_slurm_job`). Lightning's own
    auto-requeue, which saves a mid-step checkpoint from the signal handler, is off."""

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


class SamplingScheduleCallback(Callback):
    """Sets the sampler's epoch; logs the expected class mix of its draw per task as
    ``sampling/<sev|action>/<class>``, and ``sampling/balance_fraction`` (0 = natural
    frequencies, 1 = the capped balanced target)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule: Any = getattr(trainer, "datamodule", None)
        sampler = getattr(datamodule, "train_sampler", None)
        if sampler is None:
            return
        epoch = trainer.current_epoch
        # Lightning forwards set_epoch too, but not through every wrapper: set it here as well,
        # before the epoch's iterator draws the indices.
        sampler.set_epoch(epoch)
        probs = sampler.sample_weights(epoch)
        labels = datamodule.train_labels()
        values: dict[str, float] = {}
        for head in HEADS:
            names = HEAD_CLASSES[head]
            dist = expected_distribution(probs, labels[head], len(names))
            for name, p in zip(names, dist):
                # 'Offence + Yellow card' -> 'offence_yellow_card'
                slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
                values[f"sampling/{HEAD_METRIC_PREFIX[head]}/{slug}"] = float(p)
        values["sampling/balance_fraction"] = float(sampler.balance_fraction(epoch))
        pl_module.log_dict(values, on_step=False, on_epoch=True)
