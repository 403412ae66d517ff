"""What a training or validation epoch counts and logs: per-task accuracy, balanced accuracy and
the leaderboard value, exactly as the official evaluator computes them (in percent), the mean
losses, and what the data pipeline skipped or patched."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torchmetrics import Metric

from mvfoul.config import MONITOR_MODES
from mvfoul.labels import HEAD_CLASSES, HEADS, scores_from_counts
from mvfoul.validate import Problems, cross_key_rule

log = logging.getLogger(__name__)

LOWER_IS_BETTER = ("loss", "sev_loss", "action_loss")
# Official result key -> mvfoul metric name (without the stage).
_NAMES = {
    "accuracy_offence_severity": "sev_acc",
    "balanced_accuracy_offence_severity": "sev_bacc",
    "accuracy_action": "action_acc",
    "balanced_accuracy_action": "action_bacc",
    "leaderboard_value": "leaderboard",
}


def logged_metric_names() -> list[str]:
    """Every metric name a training run logs (what experiment.monitor may name)."""
    return [
        f"{stage}/{name}"
        for stage in ("train", "val")
        for name in (*LOWER_IS_BETTER, *_NAMES.values())
    ]


class MultiTaskScores(Metric):
    """Per-class ground-truth and officially-correct counts of both tasks over an epoch (scored by
    :func:`mvfoul.labels.scores_from_counts`, NaN balanced accuracy included), and the
    epoch's mean losses (weighted by batch size). A torchmetrics Metric, so the epoch-end hook
    sums it over DDP ranks once, on every rank: ``self.log(..., sync_dist=True)`` would all-reduce
    at every step, where a rank whose batch was all dropped would leave the others waiting."""

    full_state_update = False
    # States registered by add_state (declared for the type checker).
    loss_sums: torch.Tensor
    samples: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        for head in HEADS:
            for count in ("total", "correct"):
                zeros = torch.zeros(len(HEAD_CLASSES[head]), dtype=torch.long)
                self.add_state(f"{head}_{count}", zeros, dist_reduce_fx="sum")
        # Sums of loss x batch size for LOWER_IS_BETTER's three losses, and the batch sizes.
        zeros = torch.zeros(len(LOWER_IS_BETTER), dtype=torch.float64)
        self.add_state("loss_sums", zeros, dist_reduce_fx="sum")
        self.add_state("samples", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self._warned_absent = False

    def update(
        self,
        logits: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
        losses: torch.Tensor | None = None,
    ) -> None:
        """``batch["severity_match"]`` is the offence+severity prediction the evaluator accepts
        (its string-comparison quirks included); ``losses`` the batch's LOWER_IS_BETTER."""
        if losses is not None:
            size = batch["action"].shape[0]
            self.loss_sums.add_(losses.detach().to(self.loss_sums.dtype) * size)
            self.samples.add_(size)
        accepted = {"offence_severity": batch["severity_match"], "action": batch["action"]}
        for head in HEADS:
            num_classes = len(HEAD_CLASSES[head])
            right = logits[head].detach().argmax(dim=1) == accepted[head]
            # One count per (class, right or wrong): a single bincount per head and step.
            outcomes = torch.bincount(batch[head] * 2 + right, minlength=2 * num_classes)
            outcomes = outcomes.view(num_classes, 2)
            getattr(self, f"{head}_total").add_(outcomes.sum(dim=1))
            getattr(self, f"{head}_correct").add_(outcomes[:, 1])

    def compute(self) -> dict[str, torch.Tensor]:
        return self.metric_state  # type: ignore[return-value]  # every state is a tensor

    def scores(self, stage: str) -> dict[str, float]:
        """``{stage}/<name>`` for ``_NAMES``, and for LOWER_IS_BETTER when losses were given."""
        counts = {k: v.cpu() for k, v in self.compute().items()}
        results = scores_from_counts(
            counts["offence_severity_total"],
            counts["offence_severity_correct"],
            counts["action_total"],
            counts["action_correct"],
            warn=False,
        )
        absent = [
            HEAD_CLASSES[head][c]
            for head in HEADS
            for c in torch.nonzero(counts[f"{head}_total"] == 0).flatten().tolist()
        ]
        if absent and not self._warned_absent and int(counts["offence_severity_total"].sum()):
            self._warned_absent = True
            # The counts are reduced over the DDP ranks already: every rank knows; rank zero says it.
            rank_zero_only(log.warning)(
                "%s: balanced accuracy and leaderboard are NaN, as the official evaluator gives them: "
                "class(es) absent from the %s data: %s",
                stage,
                stage,
                ", ".join(absent),
            )
        scores = {f"{stage}/{_NAMES[key]}": value for key, value in results.items()}
        if float(counts["samples"]) > 0:
            means = (counts["loss_sums"] / counts["samples"]).tolist()
            for name, mean in zip(LOWER_IS_BETTER, means):
                scores[f"{stage}/{name}"] = float(mean)
        return scores


@dataclass
class DataFaultTally:
    """What the data pipeline skipped or patched in an epoch. The counts come with each batch
    (:func:`mvfoul.data.dataset.collate_views`), so they reach the main process from every
    DataLoader worker."""

    skipped_views: list[str] = field(default_factory=list)  # one message per unreadable view
    dropped_actions: list[str] = field(default_factory=list)  # action ids with no readable view
    padded_frames: int = 0  # window frames past a clip's end, filled with its last frame
    cache_repairs: list[str] = field(default_factory=list)  # damaged cache entries decoded again

    def add(self, batch: dict[str, Any]) -> None:
        self.skipped_views += batch.get("faults", [])
        self.dropped_actions += batch.get("dropped_action_ids", [])
        self.cache_repairs += batch.get("cache_repairs", [])
        padded = batch.get("num_padded_frames")
        if padded is not None:
            self.padded_frames += int(padded.sum())

    def metrics(self, stage: str) -> dict[str, float]:
        return {
            f"{stage}/data_skipped_views": float(len(self.skipped_views)),
            f"{stage}/data_dropped_actions": float(len(self.dropped_actions)),
            f"{stage}/data_padded_frames": float(self.padded_frames),
            f"{stage}/data_cache_repaired": float(len(self.cache_repairs)),
        }

    def summary(self, stage: str, epoch: int) -> str | None:
        """One line for the log, or None when the epoch's data was clean."""
        parts = []
        if self.skipped_views:
            parts.append(f"{len(self.skipped_views)} unreadable view(s) skipped")
        dropped = self.dropped_actions
        if dropped:
            ids = ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else "")
            parts.append(f"{len(dropped)} action(s) dropped with no readable view (ids {ids})")
        if self.padded_frames:
            parts.append(f"{self.padded_frames} frame(s) padded past the end of short clips")
        if self.cache_repairs:
            parts.append(f"{len(self.cache_repairs)} damaged frame-cache entr(y/ies) decoded again")
        if not parts:
            return None
        first = f"; first: {self.skipped_views[0]}" if self.skipped_views else ""
        return f"{stage} epoch {epoch}: " + ", ".join(parts) + first


@cross_key_rule("experiment")
def check_monitor(cfg: DictConfig, p: Problems) -> None:
    """The monitored metric is one this run logs, watched in the direction that means better."""
    experiment = cfg.experiment
    names = logged_metric_names()
    if experiment.monitor not in names:
        close = difflib.get_close_matches(experiment.monitor, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        p.add(
            "experiment.monitor",
            f"{experiment.monitor!r} is not a metric this run logs{hint}; logged: {', '.join(names)}",
        )
    elif experiment.mode in MONITOR_MODES:  # a bad mode is the schema check's to report
        expected = "min" if experiment.monitor.split("/")[-1] in LOWER_IS_BETTER else "max"
        if experiment.mode != expected:
            p.add(
                "experiment.mode",
                f"{experiment.mode!r} would keep the worst checkpoints of {experiment.monitor}: use mode={expected}",
            )
