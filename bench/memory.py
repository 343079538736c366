"""The matched replay memory: one budget of stored exemplars, the same for every strategy.

After each experience the memory takes a random sample of every new class and
then shrinks every class to an equal share of the budget (the first classes get
the remainder). Classes are keyed by (task label, class id) so Task-IL's
per-task class ids, which restart at zero, do not collide.

Replay follows Avalanche's ReplayPlugin: every minibatch of the new task is
joined by a minibatch of the same size drawn from the memory, so 200 stored
samples are not drowned out by 12,000 new ones. It works on tensors rather than
through Avalanche's ReplayDataLoader, which reads one sample at a time.
"""
from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin

from bench.batches import TensorBatches, materialize


class ReplayBatches:
    """Each minibatch of `batches` joined by as many samples drawn at random from `memory`."""

    def __init__(self, batches: TensorBatches, memory: list[torch.Tensor], generator: torch.Generator):
        self.batches, self.memory, self.generator = batches, memory, generator

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        n = len(self.memory[0])
        for batch in self.batches:
            idx = torch.randint(n, (len(batch[0]),), generator=self.generator)
            yield [torch.cat([b, m[idx]]) for b, m in zip(batch, self.memory)]


class ClassBalancedReplay(SupervisedPlugin):
    def __init__(self, size: int, seed: int = 0):
        super().__init__()
        if size <= 0:
            raise ValueError("memory size must be positive")
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        # (task, class) -> (x, y, t) tensors, each in a random order fixed when stored
        self.by_class: dict[tuple[int, int], list[torch.Tensor]] = {}

    def __len__(self) -> int:
        return sum(len(v[0]) for v in self.by_class.values())

    def tensors(self) -> list[torch.Tensor]:
        """The stored (x, y, task) tensors, class by class."""
        parts = list(self.by_class.values())
        return [torch.cat([p[i] for p in parts]) for i in range(3)]

    def exemplars_held(self) -> int:
        """Samples stored now (the cell records it after every task)."""
        return len(self)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for v in self.by_class.values() for t in v)

    def before_training_exp(self, strategy, **kwargs):
        if self.by_class:
            strategy.dataloader = ReplayBatches(strategy.dataloader, self.tensors(), self.generator)

    def after_training_exp(self, strategy, **kwargs):
        self.add(*materialize(strategy.experience.dataset.eval())[:3])

    def add(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> None:
        """Take a random sample of every class in (x, y, t), then shrink every class to its share."""
        for key in sorted(set(zip(t.tolist(), y.tolist()))):
            idx = torch.nonzero((t == key[0]) & (y == key[1])).flatten()
            idx = idx[torch.randperm(len(idx), generator=self.generator)]
            self.by_class[key] = [x[idx], y[idx], t[idx]]
        self._shrink()

    def _shrink(self) -> None:
        keys = sorted(self.by_class)
        share, extra = divmod(self.size, len(keys))
        for rank, key in enumerate(keys):
            quota = share + (1 if rank < extra else 0)
            self.by_class[key] = [v[:quota] for v in self.by_class[key]]
        self.by_class = {k: v for k, v in self.by_class.items() if len(v[0])}
