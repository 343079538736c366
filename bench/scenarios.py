"""Task splits and their Avalanche benchmarks.

Class order is fixed as in the reference method's experiments:
- MNIST: 5 tasks {0,1},{2,3},{4,5},{6,7},{8,9};
- CIFAR-10: 5 tasks of 2 classes in label order; CIFAR-100: 10 tasks of 10 in label order;
- Omniglot: 50 tasks, one per alphabet (30 background then 20 evaluation alphabets),
  with the drawer-based train/test split of `bench.datasets`.

Task-IL: one head per task, task id known at test, class ids from zero within
each task. Class-IL: one head over all classes seen, no task id at test.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.datasets import ArrayDataset

SCENARIOS: tuple[str, ...] = ("class-il", "task-il")
TASKS = {"mnist": 5, "cifar10": 5, "cifar100": 10}


@dataclass(frozen=True)
class Split:
    """Which global classes make up each task."""

    task_classes: tuple[tuple[int, ...], ...]

    @property
    def n_tasks(self) -> int:
        return len(self.task_classes)

    @property
    def n_classes(self) -> int:
        return sum(len(c) for c in self.task_classes)


def task_split(data: ArrayDataset) -> Split:
    """The fixed class-to-task assignment of a dataset."""
    if data.task_of_class is not None:  # Omniglot: one task per alphabet
        n_tasks = max(data.task_of_class) + 1
        tasks = [tuple(c for c, t in enumerate(data.task_of_class) if t == k) for k in range(n_tasks)]
        return Split(tuple(tasks))
    n_tasks = TASKS[data.name]
    per_task = data.n_classes // n_tasks
    return Split(tuple(tuple(range(k * per_task, (k + 1) * per_task)) for k in range(n_tasks)))


def holdout_split(data: ArrayDataset, fraction: float) -> ArrayDataset:
    """Replace the test set by the last `fraction` of each class's training samples.

    Used to choose settings without looking at the test split; the record says so.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    keep, held = [], []
    for c in range(data.n_classes):
        idx = torch.nonzero(data.y_train == c).flatten()
        n_held = max(1, int(round(len(idx) * fraction)))
        keep.append(idx[:-n_held])
        held.append(idx[-n_held:])
    keep_idx, held_idx = torch.cat(keep).sort().values, torch.cat(held).sort().values
    return ArrayDataset(
        name=data.name, x_train=data.x_train[keep_idx], y_train=data.y_train[keep_idx],
        x_test=data.x_train[held_idx], y_test=data.y_train[held_idx],
        class_names=data.class_names, checksums=data.checksums, mismatched=data.mismatched,
        unverified=data.unverified, task_of_class=data.task_of_class, task_names=data.task_names)


def build_benchmark(data: ArrayDataset, scenario: str):
    """An Avalanche benchmark (train and test streams, one experience per task) from in-memory tensors."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )

    split = task_split(data)
    order = [c for classes in split.task_classes for c in classes]
    task_il = scenario == "task-il"
    return nc_benchmark(
        tensor_dataset(data.x_train, data.y_train),
        tensor_dataset(data.x_test, data.y_test),
        n_experiences=split.n_tasks,
        task_labels=task_il,
        shuffle=False,
        fixed_class_order=order,
        per_exp_classes={k: len(c) for k, c in enumerate(split.task_classes)},
        class_ids_from_zero_in_each_exp=task_il,
    )
