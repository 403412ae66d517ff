"""Each DDP rank's share of the data; mvfoul shards every split itself (the Trainer runs with
``use_distributed_sampler=False``).

* **Training** (:class:`RankShare`): the epoch's draw is made once, the same on every rank and
  whatever the world size (:mod:`mvfoul.data.sampling`), and rank ``r`` takes every ``world_size``-th
  draw from position ``r``. The shares are disjoint; the draw is cut to a multiple of the world
  size (at most ``world_size - 1`` draws of an epoch go unused) so every rank takes the same
  number of steps: one rank with an extra step would wait forever for the others' gradients.
  Cutting rather than padding with repeats also keeps the balanced sampler's cap. Each draw keeps
  its own seed, so the ranks' augmentations and views differ.
* **Evaluation** (:class:`EvaluationShare`): rank ``r`` takes every ``world_size``-th action from
  position ``r``, nothing padded. Lightning's default sampler pads the last shares with repeated
  actions, which the confusion matrices would count twice; here the shares differ in size by at
  most one action, which validation can afford (it synchronises only at the epoch's end).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

from torch.utils.data import Sampler


class RankShare(Sampler[Any]):
    """Rank ``rank``'s share of ``sampler``'s draw (see the module docstring)."""

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
        assert isinstance(self.sampler, Sized)
        return len(self.sampler) // self.world_size


class EvaluationShare(Sampler[int]):
    """Rank ``rank``'s actions of an evaluation split of ``size`` actions, in file order."""

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
