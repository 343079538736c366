"""Minibatches straight from in-memory tensors, shared by the strategy templates and the replay memory.

Avalanche's per-sample DataLoader is several times slower than the training itself
on these small networks, so datasets are read into tensors once and batched here.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch


class TensorBatches:
    """Minibatches over in-memory tensors; shuffled by its own generator so runs are reproducible."""

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool,
                 generator: torch.Generator | None = None):
        self.tensors, self.batch_size, self.shuffle, self.generator = tensors, batch_size, shuffle, generator

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        n = len(self.tensors[0])
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield [t[idx] for t in self.tensors]


def materialize(dataset) -> list[torch.Tensor]:
    """All (x, y, task) of an Avalanche dataset as tensors, read in one pass."""
    from torch.utils.data import DataLoader

    # its own generator: a DataLoader draws a seed, which must not move the global RNG
    loader = DataLoader(dataset, batch_size=4096, shuffle=False, generator=torch.Generator(),
                        collate_fn=getattr(dataset, "collate_fn", None))
    parts = list(zip(*loader))
    return [torch.cat(p) for p in parts]
