"""Each DDP rank's share of the data (``use_distributed_sampler=False``): rank ``r`` takes every
``world_size``-th item from position ``r``. Training cuts the draw to a multiple of the world size
(a rank with an extra step would wait forever; padding with repeats would break the sampler's
cap); evaluation pads nothing (the confusion matrices would count repeats twice)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler


class RankShare(Sampler[Any]):
    """Rank ``rank``'s share of ``sampler``'s draw."""

    def __init__(self, sampler: Sampler[Any], rank: int, world_size: int) -> None:
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


def evaluation_share(size: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s actions of an evaluation split of ``size`` actions, in file order."""
    return range(rank, size, world_size)
