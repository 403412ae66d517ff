"""Per-task accuracy and balanced accuracy, and the leaderboard value, exactly as official: per
task and class, the ground-truth actions and those the evaluator counts correct (offence+severity:
a prediction equal to ``severity_match``, its string-comparison quirks included), scored by
:func:`mvfoul.official_metric.scores_from_counts`, the one place the official formula lives (NaN
balanced accuracy included, when a class is absent from the ground truth). In percent."""

from __future__ import annotations

import difflib
import logging

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torchmetrics import Metric

from mvfoul.config import MONITOR_MODES
from mvfoul.labels import HEAD_CLASSES, HEAD_METRIC_PREFIX, HEADS
from mvfoul.official_metric import scores_from_counts
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
    names = []
    for stage in ("train", "val"):
        names += [f"{stage}/{loss}" for loss in LOWER_IS_BETTER]
        for head in HEADS:
            for score in ("acc", "bacc"):
                names.append(f"{stage}/{HEAD_METRIC_PREFIX[head]}_{score}")
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
        """``batch`` holds the true classes (``offence_severity``, ``action``) and
        ``severity_match``, the offence+severity prediction the evaluator accepts; ``losses`` the
        batch's (loss, sev_loss, action_loss)."""
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
            for name, mean in zip(LOWER_IS_BETTER, means):
                scores[f"{stage}/{name}"] = float(mean)
        return scores

    def _warn_absent_once(self, stage: str, counts: dict[str, torch.Tensor]) -> None:
        if self._warned_absent or int(counts["offence_severity_total"].sum()) == 0:
            return
        absent = [
            HEAD_CLASSES[head][c]
            for head in HEADS
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
    elif experiment.mode in MONITOR_MODES:
        expected = "min" if experiment.monitor.split("/")[-1] in LOWER_IS_BETTER else "max"
        if experiment.mode != expected:
            p.add(
                "experiment.mode",
                f"{experiment.mode!r} would keep the worst checkpoints of {experiment.monitor}: use mode={expected}",
            )
