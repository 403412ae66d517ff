"""Per-task accuracy and balanced accuracy, and the leaderboard value, exactly as official.

Each epoch accumulates, per task and class, how many ground-truth actions there were and how
many of them the official evaluator would count correct — for offence+severity that is a
prediction equal to :attr:`OfficialLabels.severity_match`, which reproduces the evaluator's
string-comparison quirks. The scores come from :func:`mvfoul.evaluation.official.scores_from_counts`,
the one place the official formula lives, so the logged validation metrics equal what the
official evaluator gives on the same predictions (NaN balanced accuracy included, when a class
is absent from the ground truth). Everything is in percent.
"""

from __future__ import annotations

import logging

import torch
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics import Metric

from mvfoul.labels import (
    ACTION_CLASSES,
    HEAD_CLASSES,
    HEAD_METRIC_PREFIX,
    HEADS,
    OFFENCE_SEVERITY_CLASSES,
)
from mvfoul.official_metric import scores_from_counts

log = logging.getLogger(__name__)

# Head -> (metric prefix, number of classes).
TASKS: dict[str, tuple[str, int]] = {
    head: (HEAD_METRIC_PREFIX[head], len(HEAD_CLASSES[head])) for head in HEADS
}
STAGES = ("train", "val")
LOWER_IS_BETTER = ("loss", "sev_loss", "action_loss")
_SCORES = ("acc", "bacc")
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
    names = []
    for stage in STAGES:
        names += [f"{stage}/{n}" for n in LOWER_IS_BETTER]
        names += [f"{stage}/{prefix}_{score}" for prefix, _ in TASKS.values() for score in _SCORES]
        names.append(f"{stage}/leaderboard")
    return names


class MultiTaskScores(Metric):
    """Per-class ground-truth and officially-correct counts of both tasks over an epoch, and the
    epoch's mean losses (weighted by batch size).

    A torchmetrics Metric, so everything is summed across DDP ranks, in the module's epoch-end
    hook on every rank, before scoring. The losses live here rather than in Lightning's
    ``self.log(..., sync_dist=True)``, which would all-reduce at every step (a rank whose batch was
    all dropped would leave the others waiting) and at an epoch's end whenever rank zero's
    progress bar first reads it.
    """

    full_state_update = False
    # States registered by add_state (declared for the type checker).
    loss_sums: torch.Tensor
    samples: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        for head, (_, n) in TASKS.items():
            self.add_state(f"{head}_total", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
            self.add_state(
                f"{head}_correct", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum"
            )
        # Sums of loss x batch size for LOWER_IS_BETTER's three losses, and the batch sizes.
        self.add_state(
            "loss_sums",
            torch.zeros(len(LOWER_IS_BETTER), dtype=torch.float64),
            dist_reduce_fx="sum",
        )
        self.add_state("samples", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self._warned_absent = False

    def update(
        self,
        logits: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
        losses: torch.Tensor | None = None,
    ) -> None:
        """``batch`` holds the true classes (``offence_severity``, ``action``) and
        ``severity_match``, the offence+severity prediction the evaluator accepts; ``losses`` the
        batch's (loss, sev_loss, action_loss)."""
        if losses is not None:
            size = batch["action"].shape[0]
            self.loss_sums.add_(losses.detach().to(self.loss_sums.dtype) * size)
            self.samples.add_(size)
        accepted = {"offence_severity": batch["severity_match"], "action": batch["action"]}
        for head, (_, n) in TASKS.items():
            truth = batch[head]
            right = logits[head].detach().argmax(dim=1) == accepted[head]
            # One count per (class, right or wrong): a single bincount per head and step.
            outcomes = torch.bincount(truth * 2 + right, minlength=2 * n).view(n, 2)
            getattr(self, f"{head}_total").add_(outcomes.sum(dim=1))
            getattr(self, f"{head}_correct").add_(outcomes[:, 1])

    def compute(self) -> dict[str, torch.Tensor]:
        counts = {
            name: getattr(self, name)
            for head in TASKS
            for name in (f"{head}_total", f"{head}_correct")
        }
        return {**counts, "loss_sums": self.loss_sums, "samples": self.samples}

    def scores(self, stage: str) -> dict[str, float]:
        """``{stage}/sev_acc``, ``sev_bacc``, ``action_acc``, ``action_bacc``, ``leaderboard``, and
        the mean ``loss``, ``sev_loss``, ``action_loss`` when losses were given."""
        counts = {k: v.cpu() for k, v in self.compute().items()}
        results = scores_from_counts(
            counts["offence_severity_total"],
            counts["offence_severity_correct"],
            counts["action_total"],
            counts["action_correct"],
            warn=False,
        )
        self._warn_absent_once(stage, counts)
        scores = {f"{stage}/{_NAMES[key]}": value for key, value in results.items()}
        if float(counts["samples"]) > 0:
            means = (counts["loss_sums"] / counts["samples"]).tolist()
            scores.update(
                {f"{stage}/{name}": float(value) for name, value in zip(LOWER_IS_BETTER, means)}
            )
        return scores

    def _warn_absent_once(self, stage: str, counts: dict[str, torch.Tensor]) -> None:
        if self._warned_absent or int(counts["offence_severity_total"].sum()) == 0:
            return
        absent = [
            names[c]
            for head, names in (
                ("offence_severity", OFFENCE_SEVERITY_CLASSES),
                ("action", ACTION_CLASSES),
            )
            for c in torch.nonzero(counts[f"{head}_total"] == 0).flatten().tolist()
        ]
        if absent:
            self._warned_absent = True
            # The counts are reduced over the DDP ranks already: every rank knows; rank zero says it.
            rank_zero_only(log.warning)(
                "%s: balanced accuracy and leaderboard are NaN, as the official evaluator gives them: "
                "class(es) absent from the %s data: %s",
                stage,
                stage,
                ", ".join(absent),
            )
