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
from torchmetrics import Metric

from mvfoul.evaluation.official import scores_from_counts
from mvfoul.labels import ACTION_CLASSES, NUM_ACTION, NUM_OFFENCE_SEVERITY, OFFENCE_SEVERITY_CLASSES

log = logging.getLogger(__name__)

# Head -> (metric prefix, number of classes).
TASKS: dict[str, tuple[str, int]] = {
    "offence_severity": ("sev", NUM_OFFENCE_SEVERITY),
    "action": ("action", NUM_ACTION),
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
    """Per-class ground-truth and officially-correct counts of both tasks over an epoch.

    A torchmetrics Metric, so the counts are summed across DDP ranks before scoring.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for head, (_, n) in TASKS.items():
            self.add_state(f"{head}_total", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
            self.add_state(f"{head}_correct", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self._warned_absent = False

    def update(self, logits: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:  # type: ignore[override]
        """``batch`` holds the true classes (``offence_severity``, ``action``) and
        ``severity_match``, the offence+severity prediction the evaluator accepts."""
        accepted = {"offence_severity": batch["severity_match"], "action": batch["action"]}
        for head, (_, n) in TASKS.items():
            truth = batch[head]
            right = logits[head].detach().argmax(dim=1) == accepted[head]
            getattr(self, f"{head}_total").add_(torch.bincount(truth, minlength=n))
            getattr(self, f"{head}_correct").add_(torch.bincount(truth[right], minlength=n))

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {name: getattr(self, name) for head in TASKS for name in (f"{head}_total", f"{head}_correct")}

    def scores(self, stage: str) -> dict[str, float]:
        """``{stage}/sev_acc``, ``sev_bacc``, ``action_acc``, ``action_bacc``, ``leaderboard``."""
        counts = {k: v.cpu() for k, v in self.compute().items()}
        results = scores_from_counts(
            counts["offence_severity_total"],
            counts["offence_severity_correct"],
            counts["action_total"],
            counts["action_correct"],
            warn=False,
        )
        self._warn_absent_once(stage, counts)
        return {f"{stage}/{_NAMES[key]}": value for key, value in results.items()}

    def _warn_absent_once(self, stage: str, counts: dict[str, torch.Tensor]) -> None:
        if self._warned_absent or int(counts["offence_severity_total"].sum()) == 0:
            return
        absent = [
            names[c]
            for head, names in (("offence_severity", OFFENCE_SEVERITY_CLASSES), ("action", ACTION_CLASSES))
            for c in torch.nonzero(counts[f"{head}_total"] == 0).flatten().tolist()
        ]
        if absent:
            self._warned_absent = True
            log.warning(
                "%s: balanced accuracy and leaderboard are NaN, as the official evaluator gives them: "
                "class(es) absent from the %s data: %s",
                stage, stage, ", ".join(absent),
            )
