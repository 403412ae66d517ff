"""Actions -> multi-view samples -> padded batches.

An action has 2-4 views. A sample stacks the chosen views of one action; a batch pads them to
its largest view count and carries ``view_mask`` so that pooling ignores the padding. This keeps
batches of any size (the baseline evaluated with batch size 1 to dodge ragged view counts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mvfoul.data.annotations import Action
from mvfoul.data.frames import LoadedClip
from mvfoul.data.sampling import Draw
from mvfoul.errors import DataError

UNLABELLED = -1  # label value of an action from an unlabelled split


ON_DECODE_ERROR = ("raise", "skip")


class MultiViewClipDataset(Dataset):
    """One sample per action: its views loaded (decoded or from the cache) and transformed.

    ``views_per_sample=None`` keeps every view (validation/test). An int ``k`` draws ``k``
    views at random per access (training, as the baseline does), or all of them when the action
    has fewer. Indexed with a :class:`Draw`, the view draw and the augmentation use a generator
    seeded with the draw's seed (the process's own random state is left as it was); indexed with
    a plain int they use torch's global generator. Nothing is read at construction: workers open
    files lazily.

    A view that cannot be decoded raises (``on_decode_error="raise"``), or with ``"skip"`` is
    replaced by another view of the same action not drawn yet, else left out; an action left
    with no readable view becomes a *dropped* sample that :func:`collate_views` removes. Every
    skip travels with the batch (``faults``, ``dropped_action_ids``) so the training loop can
    count and report them: labels are never silently wrong, and nothing is lost unreported.
    """

    def __init__(
        self,
        actions: Sequence[Action],
        load_clip: Callable[[Path], LoadedClip],
        transform: Callable[[torch.Tensor], torch.Tensor],
        views_per_sample: int | None,
        on_decode_error: str = "raise",
    ) -> None:
        if views_per_sample is not None and views_per_sample < 1:
            raise ValueError(f"views_per_sample must be >= 1 or None, got {views_per_sample}")
        if on_decode_error not in ON_DECODE_ERROR:
            raise ValueError(
                f"on_decode_error must be one of {ON_DECODE_ERROR}, got {on_decode_error!r}"
            )
        self.actions = list(actions)
        self.load_clip = load_clip
        self.transform = transform
        self.views_per_sample = views_per_sample
        self.on_decode_error = on_decode_error

    def __len__(self) -> int:
        return len(self.actions)

    def _view_order(self, action: Action) -> list[int]:
        """All view indices, the ones to use first: a random draw of k (training) or all."""
        n = len(action.clips)
        k = self.views_per_sample
        if k is None or n <= k:
            return list(range(n))
        order = torch.randperm(n).tolist()
        # The drawn views keep the annotation order (the main camera first); the rest are the
        # replacements, in random order.
        return sorted(order[:k]) + order[k:]

    def __getitem__(self, item: int | Draw) -> dict[str, Any]:
        if isinstance(item, tuple):
            index, seed = item
            # fork_rng restores the caller's generator afterwards: loading in the main process
            # (num_workers=0) must not move the RNG that dropout in the training step uses.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self._load(int(index))
        return self._load(int(item))

    def _load(self, index: int) -> dict[str, Any]:
        action = self.actions[index]
        order = self._view_order(action)
        wanted = (
            len(order) if self.views_per_sample is None else min(self.views_per_sample, len(order))
        )
        clips: list[torch.Tensor] = []
        faults: list[str] = []
        repairs: list[str] = []
        num_padded = 0
        for view in order:
            if len(clips) == wanted:
                break
            try:
                loaded = self.load_clip(action.clips[view])
            except DataError as err:
                if self.on_decode_error == "raise":
                    raise
                faults.append(str(err))
                continue
            num_padded += loaded.padded
            if loaded.repaired:
                repairs.append(loaded.repaired)
            clips.append(self.transform(loaded.frames))
        if not clips:
            return {
                "dropped": True,
                "action_id": action.action_id,
                "faults": faults,
                "cache_repairs": repairs,
            }
        labels = action.labels
        return {
            "video": torch.stack(clips),  # [V, C, T, H, W]
            "offence_severity": labels.offence_severity if labels is not None else UNLABELLED,
            "action": labels.action if labels is not None else UNLABELLED,
            # The offence+severity prediction the official evaluator accepts (labels.py).
            "severity_match": labels.severity_match if labels is not None else UNLABELLED,
            "action_id": action.action_id,
            "num_padded_frames": num_padded,
            "faults": faults,
            "cache_repairs": repairs,
        }


def collate_views(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples, padding each to the batch's largest view count with all-zero views.

    ``view_mask[b, v]`` is True for a real view; pooling must ignore the False ones. Dropped
    samples (no readable view) are left out and listed in ``dropped_action_ids``; when a whole
    batch is dropped, ``video`` is None and the training loop skips the batch.
    """
    if not samples:
        raise ValueError("collate_views got an empty batch")
    faults = [f for s in samples for f in s.get("faults", [])]
    repairs = [r for s in samples for r in s.get("cache_repairs", [])]
    dropped = [s["action_id"] for s in samples if s.get("dropped")]
    samples = [s for s in samples if not s.get("dropped")]
    if not samples:
        return {
            "video": None,
            "action_id": [],
            "faults": faults,
            "dropped_action_ids": dropped,
            "num_padded_frames": torch.zeros(0, dtype=torch.long),
            "cache_repairs": repairs,
        }
    max_views = max(s["video"].shape[0] for s in samples)
    first = samples[0]["video"]
    video = first.new_zeros((len(samples), max_views, *first.shape[1:]))
    view_mask = torch.zeros((len(samples), max_views), dtype=torch.bool)
    for b, sample in enumerate(samples):
        views = sample["video"].shape[0]
        video[b, :views] = sample["video"]
        view_mask[b, :views] = True

    def column(key: str) -> torch.Tensor:
        return torch.tensor([s[key] for s in samples], dtype=torch.long)

    return {
        "video": video,  # [B, Vmax, C, T, H, W]
        "view_mask": view_mask,  # [B, Vmax]
        "offence_severity": column("offence_severity"),
        "action": column("action"),
        "severity_match": column("severity_match"),
        "action_id": [s["action_id"] for s in samples],
        "num_padded_frames": column("num_padded_frames"),
        "faults": faults,
        "dropped_action_ids": dropped,
        "cache_repairs": repairs,
    }
