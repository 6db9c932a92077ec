"""Batches from an in-memory split, with per-epoch shuffling and DistributedSampler-style sharding."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from .dataset import ImageSplit

__all__ = ["TensorLoader"]


class TensorLoader:
    """Iterate ``(images, labels)`` batches of an :class:`ImageSplit` without worker processes.

    Batches are ``(b, C, H, W)`` uint8 images and ``(b,)`` int64 labels, indexed straight out
    of the split's tensors. Like ``DistributedSampler``, each epoch's order is a permutation of
    all ``N`` indices (the same on every rank), padded by repeating its head to a multiple of
    ``world_size``; rank ``r`` takes every ``world_size``-th index from position ``r``, so each
    rank sees ``ceil(N / world_size)`` samples.

    Args:
        split: the data.
        batch_size: samples per batch.
        shuffle: permute each epoch; else keep the split's order.
        drop_last: drop this rank's final batch when it has fewer than ``batch_size`` samples.
        generator: shuffling randomness (default: a CPU generator seeded with 0). Its
            ``initial_seed()`` is the base seed of :meth:`set_epoch`; ranks must pass equal seeds.
        rank, world_size: this process's shard.
    """

    def __init__(
        self,
        split: ImageSplit,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got rank={rank}.")
        if len(split) == 0:
            raise ValueError("cannot load batches from an empty split.")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.base_seed = self.generator.initial_seed()
        self.rank = rank
        self.world_size = world_size
        self.samples_per_rank = math.ceil(len(split) / world_size)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the generator with ``base_seed + epoch``, so every rank (and every rerun)
        draws the same order for that epoch. Without it, each pass continues the generator."""
        self.generator.manual_seed(self.base_seed + epoch)

    def indices(self) -> torch.Tensor:
        """``(samples_per_rank,)`` int64 indices of this rank for the next pass (draws from the generator)."""
        count = len(self.split)
        if self.shuffle:
            order = torch.randperm(count, generator=self.generator, device=self.generator.device).cpu()
        else:
            order = torch.arange(count)
        total = self.samples_per_rank * self.world_size
        order = order.repeat(math.ceil(total / count))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self.indices()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            yield self.split.images[batch], self.split.labels[batch]

    def __len__(self) -> int:
        """Batches per pass on this rank."""
        if self.drop_last:
            return self.samples_per_rank // self.batch_size
        return math.ceil(self.samples_per_rank / self.batch_size)
