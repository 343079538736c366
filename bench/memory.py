"""The matched replay memory: one budget of stored exemplars, the same for every strategy.

After each experience the memory takes a random sample of every new class and
then shrinks every class to an equal share of the budget (the first classes get
the remainder). Classes are keyed by (task label, class id) so Task-IL's
per-task class ids, which restart at zero, do not collide. Training data for the
next experience is the experience's data concatenated with the memory.
"""
from __future__ import annotations

import torch
from avalanche.benchmarks.utils import concat_datasets
from avalanche.benchmarks.utils.classification_dataset import (
    _make_taskaware_tensor_classification_dataset as tensor_dataset,
)
from avalanche.core import SupervisedPlugin

from bench.strategy import materialize


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

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for v in self.by_class.values() for t in v)

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        if not self.by_class:
            return
        x, y, t = self.tensors()
        strategy.adapted_dataset = concat_datasets(
            [strategy.adapted_dataset, tensor_dataset(x, y, task_labels=t.tolist())])

    def after_training_exp(self, strategy, **kwargs):
        x, y, t = materialize(strategy.experience.dataset.eval())
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
