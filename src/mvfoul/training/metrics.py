"""Per-task accuracy and balanced accuracy, and the leaderboard value.

One torchmetrics confusion matrix per task accumulates over an epoch (and syncs across DDP
ranks); the scores are read off it. Balanced accuracy is the mean recall over the classes
present in the ground truth, which is what the official metric averages; torchmetrics'
``MulticlassAccuracy(average="macro")`` differs when a class is predicted but absent.
Everything is in percent, like the official evaluator.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from mvfoul.labels import NUM_ACTION, NUM_OFFENCE_SEVERITY

# Head name -> (metric prefix, number of classes).
TASKS: dict[str, tuple[str, int]] = {
    "offence_severity": ("sev", NUM_OFFENCE_SEVERITY),
    "action": ("action", NUM_ACTION),
}
STAGES = ("train", "val")
LOWER_IS_BETTER = ("loss", "sev_loss", "action_loss")
_SCORES = ("acc", "bacc")


def logged_metric_names() -> list[str]:
    """Every metric name a training run logs (what experiment.monitor may name)."""
    names = []
    for stage in STAGES:
        names += [f"{stage}/{n}" for n in LOWER_IS_BETTER]
        names += [f"{stage}/{prefix}_{score}" for prefix, _ in TASKS.values() for score in _SCORES]
        names.append(f"{stage}/leaderboard")
    return names


def scores_from_confusion(confusion: torch.Tensor) -> tuple[float, float]:
    """(accuracy, balanced accuracy) in percent from a [true, predicted] confusion matrix.

    Balanced accuracy averages the recall of the classes that occur in the ground truth; with no
    samples at all both are NaN.
    """
    confusion = confusion.double()
    total = confusion.sum()
    if total == 0:
        return float("nan"), float("nan")
    support = confusion.sum(dim=1)
    present = support > 0
    recall = confusion.diagonal()[present] / support[present]
    return float(100.0 * confusion.diagonal().sum() / total), float(100.0 * recall.mean())


class MultiTaskScores(nn.Module):
    """Accumulates both tasks' predictions over an epoch; ``compute`` gives named scores."""

    def __init__(self) -> None:
        super().__init__()
        self.confusion = nn.ModuleDict(
            {head: MulticlassConfusionMatrix(num_classes=n) for head, (_, n) in TASKS.items()}
        )

    def update(self, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        for head, matrix in self.confusion.items():
            matrix.update(logits[head].detach().argmax(dim=1), targets[head])

    def compute(self, stage: str) -> dict[str, float]:
        out: dict[str, float] = {}
        balanced = []
        for head, (prefix, _) in TASKS.items():
            acc, bacc = scores_from_confusion(self.confusion[head].compute())
            out[f"{stage}/{prefix}_acc"] = acc
            out[f"{stage}/{prefix}_bacc"] = bacc
            balanced.append(bacc)
        # The leaderboard value: mean of the two balanced accuracies.
        out[f"{stage}/leaderboard"] = sum(balanced) / len(balanced)
        return out

    def reset(self) -> None:
        for matrix in self.confusion.values():
            matrix.reset()
