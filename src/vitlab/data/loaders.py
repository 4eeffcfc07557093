"""Deterministic, resumable, shardable batches.

Two rules make a run reproducible to the bit and resumable mid-epoch:
- the order of epoch ``e`` is a permutation drawn from a generator seeded with ``(seed, e)``, and a
  resumed run skips the batches it already consumed;
- each sample's augmentation draws from a generator seeded with ``(seed, epoch, index)``, so it does not
  depend on which worker, which rank or which run decodes it.
For data parallelism every global batch is cut into contiguous per-rank slices, so N processes see
exactly the samples one process would see in the same global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .images import to_mode


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix64-style), stable across processes and runs."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class TransformDataset(Dataset):
    """Samples -> (tensor, label), with per-sample seeded augmentation (see the module doc)."""

    def __init__(self, samples, transform: Callable, mode: str, seed: int = 0) -> None:
        self.samples, self.transform, self.mode, self.seed, self.epoch = samples, transform, mode, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = to_mode(self.samples.image(i), self.mode)
        with torch.random.fork_rng(devices=[]):  # never disturb the caller's RNG (dropout, mixup)
            torch.manual_seed(_mix(self.seed, self.epoch, i))
            x = self.transform(img)
        return x, int(self.samples.labels[i])


class EpochBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of each global batch of a seeded per-epoch permutation.

    Args:
        n: Dataset size.
        global_batch: Samples per global batch (all ranks, one micro-step).
        seed: Base seed of the permutations.
        rank: This process's rank.
        world: Number of processes; ``global_batch`` must be divisible by it.
        shuffle: Permute (train) or keep the order (eval).
        drop_last: Drop the last partial global batch (train).
        multiple_of: Round the batches per epoch down to a multiple of this (gradient accumulation).
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        multiple_of: int = 1,
    ) -> None:
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by {world} processes")
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.shuffle, self.drop_last, self.multiple_of = shuffle, drop_last, multiple_of
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select epoch ``epoch``'s order and skip its first ``start_batch`` global batches (resume)."""
        self.epoch, self.start = epoch, start_batch

    def batches(self) -> int:
        """Global batches per epoch."""
        if not self.drop_last:
            return -(-self.n // self.global_batch)
        full = self.n // self.global_batch
        return full - full % self.multiple_of

    def __len__(self) -> int:
        return self.batches() - self.start

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).numpy()
        else:
            order = np.arange(self.n)
        per_rank = self.global_batch // self.world
        for b in range(self.start, self.batches()):
            batch = order[b * self.global_batch : (b + 1) * self.global_batch]
            if self.drop_last or len(batch) == self.global_batch:
                yield batch[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()
            else:  # last partial eval batch: split as evenly as possible
                yield np.array_split(batch, self.world)[self.rank].tolist()
