"""Each DDP rank's share of the data (the Trainer runs with ``use_distributed_sampler=False``):
rank ``r`` takes every ``world_size``-th item from position ``r``.

Training cuts the draw to a multiple of the world size, so every rank takes the same number of
steps (one with an extra step would wait forever for the others' gradients), and cutting, unlike
padding with repeats, keeps the balanced sampler's cap. Evaluation pads nothing: Lightning's
default sampler repeats actions, which the confusion matrices would count twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler


class RankShare(Sampler[Any]):
    """Rank ``rank``'s share of ``sampler``'s draw."""

    def __init__(self, sampler: Sampler[Any], rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.sampler = sampler
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Any]:
        draws = list(self.sampler)
        usable = len(draws) - len(draws) % self.world_size
        return iter(draws[self.rank : usable : self.world_size])

    def __len__(self) -> int:
        return len(self.sampler) // self.world_size  # type: ignore[arg-type]


class EvaluationShare(Sampler[int]):
    """Rank ``rank``'s actions of an evaluation split of ``size`` actions, in file order."""

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
