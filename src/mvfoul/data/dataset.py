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
from mvfoul.data.video import DecodedClip, decode_frames

UNLABELLED = -1  # label value of an action from an unlabelled split


class MultiViewClipDataset(Dataset):
    """One sample per action: its views decoded at ``frame_indices`` and transformed.

    ``views_per_sample=None`` keeps every view (validation/test). An int ``k`` draws ``k``
    views at random per access (training, as the baseline does), or all of them when the action
    has fewer. The draw uses torch's global generator, which Lightning seeds per worker, so a
    seeded run draws the same views. Nothing is read at construction: workers open files lazily.
    """

    def __init__(
        self,
        actions: Sequence[Action],
        frame_indices: Sequence[int],
        transform: Callable[[torch.Tensor], torch.Tensor],
        views_per_sample: int | None,
        decode: Callable[[str | Path, Sequence[int]], DecodedClip] = decode_frames,
    ) -> None:
        if views_per_sample is not None and views_per_sample < 1:
            raise ValueError(f"views_per_sample must be >= 1 or None, got {views_per_sample}")
        if len(frame_indices) == 0:
            raise ValueError("frame_indices must not be empty")
        self.actions = list(actions)
        self.frame_indices = [int(i) for i in frame_indices]
        self.transform = transform
        self.views_per_sample = views_per_sample
        self.decode = decode

    def __len__(self) -> int:
        return len(self.actions)

    def _choose_views(self, action: Action) -> list[Path]:
        k = self.views_per_sample
        if k is None or len(action.clips) <= k:
            return list(action.clips)
        # Sorted so the chosen views keep the annotation order (the main camera first).
        chosen = sorted(torch.randperm(len(action.clips))[:k].tolist())
        return [action.clips[j] for j in chosen]

    def __getitem__(self, index: int) -> dict[str, Any]:
        action = self.actions[index]
        clips = []
        num_padded = 0
        for path in self._choose_views(action):
            decoded = self.decode(path, self.frame_indices)
            num_padded += decoded.padded
            clips.append(self.transform(decoded.frames))
        labels = action.labels
        return {
            "video": torch.stack(clips),  # [V, C, T, H, W]
            "offence_severity": labels.offence_severity if labels is not None else UNLABELLED,
            "action": labels.action if labels is not None else UNLABELLED,
            "action_id": action.action_id,
            "num_padded_frames": num_padded,
        }


def collate_views(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples, padding each to the batch's largest view count with all-zero views.

    ``view_mask[b, v]`` is True for a real view; pooling must ignore the False ones.
    """
    if not samples:
        raise ValueError("collate_views got an empty batch")
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
        "action_id": [s["action_id"] for s in samples],
        "num_padded_frames": column("num_padded_frames"),
    }
