"""Actions -> multi-view samples -> batches padded to their largest view count (2-4), with
``view_mask`` for pooling to ignore the padding (the baseline used batch size 1 instead)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from mvfoul.data.annotations import Action
from mvfoul.data.frames import LoadedClip
from mvfoul.data.sampling import Draw
from mvfoul.errors import DataError

UNLABELLED = -1  # label value of an action from an unlabelled split
# severity_match: the offence+severity prediction the official evaluator accepts (labels.py).
LABEL_KEYS = ("offence_severity", "action", "severity_match")


class MultiViewClipDataset(Dataset):
    """One sample per action: its views (all, or ``views_per_sample`` drawn at random) loaded
    and transformed; indexed with a :class:`Draw`, the draw and augmentation use its seed (with an
    int, torch's global generator). With ``on_decode_error="skip"`` an unreadable view is replaced
    by one not drawn yet, else left out; an action with none left is dropped. Skips travel with
    the batch to be reported."""

    def __init__(
        self,
        actions: Sequence[Action],
        load_clip: Callable[[Path], LoadedClip],
        transform: Callable[[torch.Tensor], torch.Tensor],
        views_per_sample: int | None,
        on_decode_error: str = "raise",
    ) -> None:
        self.actions = list(actions)
        self.load_clip = load_clip
        self.transform = transform
        self.views_per_sample = views_per_sample
        self.on_decode_error = on_decode_error

    def __len__(self) -> int:
        return len(self.actions)

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
        num_views = len(action.clips)
        per_sample = self.views_per_sample
        order = list(range(num_views))
        if per_sample is not None and num_views > per_sample:
            drawn = torch.randperm(num_views).tolist()
            # The drawn views keep the annotation order (the main camera first); the rest are
            # the replacements, in random order.
            order = sorted(drawn[:per_sample]) + drawn[per_sample:]
        wanted = num_views if per_sample is None else min(per_sample, num_views)
        clips: list[torch.Tensor] = []
        report: dict[str, Any] = {"action_id": action.action_id, "faults": [], "cache_repairs": []}
        num_padded = 0
        for view in order:
            if len(clips) == wanted:
                break
            try:
                loaded = self.load_clip(action.clips[view])
            except DataError as err:
                if self.on_decode_error == "raise":
                    raise
                report["faults"].append(str(err))
                continue
            num_padded += loaded.padded
            if loaded.repaired:
                report["cache_repairs"].append(loaded.repaired)
            clips.append(self.transform(loaded.frames))
        if not clips:
            return {"dropped": True, **report}
        sample: dict[str, Any] = {"video": torch.stack(clips)}  # [V, C, T, H, W]
        for key in LABEL_KEYS:
            sample[key] = UNLABELLED if action.labels is None else getattr(action.labels, key)
        sample["num_padded_frames"] = num_padded
        sample.update(report)
        return sample


def collate_views(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples, padded with all-zero views (``view_mask`` False) to the largest view
    count. Dropped samples are listed in ``dropped_action_ids``; when all are, ``video`` is None."""
    report = {
        "faults": [f for s in samples for f in s.get("faults", [])],
        "dropped_action_ids": [s["action_id"] for s in samples if s.get("dropped")],
        "cache_repairs": [r for s in samples for r in s.get("cache_repairs", [])],
    }
    samples = [s for s in samples if not s.get("dropped")]
    if not samples:
        empty = torch.zeros(0, dtype=torch.long)
        return {"video": None, "action_id": [], "num_padded_frames": empty, **report}
    views = [s["video"] for s in samples]
    video = pad_sequence(views, batch_first=True)  # zero views after the real ones
    view_mask = pad_sequence(
        [torch.ones(len(v), dtype=torch.bool) for v in views], batch_first=True
    )
    batch: dict[str, Any] = {"video": video, "view_mask": view_mask}  # [B, V, C, T, H, W], [B, V]
    for key in (*LABEL_KEYS, "num_padded_frames"):
        batch[key] = torch.tensor([s[key] for s in samples], dtype=torch.long)
    batch["action_id"] = [s["action_id"] for s in samples]
    batch.update(report)
    return batch
