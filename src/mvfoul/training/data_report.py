"""Counts what the data pipeline skipped or patched in an epoch, and reports it once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataFaultTally:
    """Per-epoch tally. The counts come with each batch (see
    :func:`mvfoul.data.dataset.collate_views`), so they reach the main process from every
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
        if dropped := self.dropped_actions:
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

    def reset(self) -> None:
        self.skipped_views.clear()
        self.dropped_actions.clear()
        self.padded_frames = 0
        self.cache_repairs.clear()
