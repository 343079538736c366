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
        n_held = _held_out(len(idx), fraction)
        keep.append(idx[:-n_held])
        held.append(idx[-n_held:])
    keep_idx, held_idx = torch.cat(keep).sort().values, torch.cat(held).sort().values
    return ArrayDataset(
        name=data.name, x_train=data.x_train[keep_idx], y_train=data.y_train[keep_idx],
        x_test=data.x_train[held_idx], y_test=data.y_train[held_idx],
        class_names=data.class_names, checksums=data.checksums, mismatched=data.mismatched,
        unverified=data.unverified, task_of_class=data.task_of_class, task_names=data.task_names)


def _held_out(n: int, fraction: float) -> int:
    """How many of a class's `n` training samples `holdout_split` holds out: at least one."""
    return max(1, int(round(n * fraction)))


def holdout_problem(data: ArrayDataset, fraction: float) -> str | None:
    """Why `holdout_split(data, fraction)` cannot be trained on (a class left without training
    samples), or None."""
    counts = torch.bincount(data.y_train, minlength=data.n_classes)[: data.n_classes].tolist()
    empty = [data.class_names[c] for c, n in enumerate(counts) if n - _held_out(n, fraction) < 1]
    if not empty:
        return None
    smallest = min(counts)
    shown = ", ".join(map(str, empty[:5])) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
    return (f"--holdout {fraction} holds out every training image of {len(empty)} class(es) ({shown}), "
            f"leaving none to train on; the smallest class has {smallest} training image(s): "
            f"use a smaller fraction")


def build_benchmark(data: ArrayDataset, scenario: str):
    """An Avalanche benchmark (train and test streams, one experience per task) from in-memory tensors.

    Built with Avalanche's current API (`benchmark_from_datasets`, `with_task_labels`,
    `with_classes_timeline`), not the deprecated `nc_benchmark`: each experience holds the
    task's samples, labelled here (Task-IL: task id k, class ids from
    zero in the task's class order; Class-IL: task 0, global ids). That is exactly the
    stream `nc_benchmark(..., shuffle=False, fixed_class_order=..., task_labels=...,
    class_ids_from_zero_in_each_exp=...)` gave (tests/test_scenarios.py compares them).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")
    from avalanche.benchmarks.scenarios import (
        benchmark_from_datasets, with_classes_timeline, with_task_labels,
    )

    split = task_split(data)
    task_il = scenario == "task-il"
    streams: dict[str, list] = {"train": [], "test": []}
    for k, classes in enumerate(split.task_classes):
        for name, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
            streams[name].append(_task_dataset(x, y, classes, k if task_il else 0, relabel=task_il))
    benchmark = with_classes_timeline(with_task_labels(benchmark_from_datasets(**streams)))
    order = ClassOrder(tuple(len(c) for c in split.task_classes),
                       tuple(k for c in split.task_classes for k in (range(len(c)) if task_il else c)))
    for stream in benchmark.streams.values():
        for exp in stream:
            # the timeline gives sets; Avalanche's own MultiHeadClassifier indexes a tensor with
            # classes_in_this_experience, which needs a sequence (the deprecated generator gave sorted lists)
            for name in ("classes_in_this_experience", "previous_classes", "classes_seen_so_far", "future_classes"):
                setattr(exp, name, sorted(getattr(exp, name)))
            exp.benchmark = order
    return benchmark


@dataclass(frozen=True)
class ClassOrder:
    """What Avalanche 0.6's own ICaRL still reads from `experience.benchmark`, an attribute only the
    deprecated scenarios have: classes per experience and the class order (in the stream's ids)."""

    n_classes_per_exp: tuple[int, ...]
    classes_order: tuple[int, ...]


def _task_dataset(x: torch.Tensor, y: torch.Tensor, classes: tuple[int, ...], task: int, relabel: bool):
    """The samples of `classes` as a task-aware Avalanche dataset, class block by class block.

    The blocks come in the iteration order of `set(classes)`, which is how the deprecated
    generator collected them (within a block: dataset order). The same order gives the same
    minibatches and exemplars, so records made with the deprecated generator stay reproducible;
    for Split-MNIST/CIFAR-10 it is the label order, for some CIFAR-100 and Omniglot tasks not.
    """
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )

    local = {c: k for k, c in enumerate(classes)}  # Task-IL ids: from zero in the task's class order
    blocks = [(c, torch.nonzero(y == c).flatten()) for c in set(classes)]
    idx = torch.cat([i for _, i in blocks])
    labels = torch.cat([torch.full((len(i),), local[c], dtype=y.dtype) for c, i in blocks]) \
        if relabel else y[idx]
    return tensor_dataset(x[idx], labels, task_labels=task)
