"""Output heads for the two scenarios (imports Avalanche, so only cells load this module)."""
from __future__ import annotations

import torch
from avalanche.models import IncrementalClassifier, MultiHeadClassifier, MultiTaskModule
from torch import nn


class ClassILNet(nn.Module):
    """Class-IL: one head over every class seen so far; units of unseen classes are masked."""

    def __init__(self, features: nn.Module, initial_classes: int = 2):
        super().__init__()
        self.features = features
        self.classifier = IncrementalClassifier(features.out_features, initial_out_features=initial_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MultiHeadModule(MultiTaskModule):
    """A MultiTaskModule whose outputs for smaller heads are padded with a large negative value.

    Avalanche pads with zeros, which beat a head's logits whenever they are all negative,
    so argmax could pick a unit that belongs to no class of the task (Omniglot's heads
    differ in size).
    """

    PAD = -1000.0  # Avalanche's own mask value for unused units

    def forward(self, x: torch.Tensor, task_labels) -> torch.Tensor | dict:
        if task_labels is None:  # every known task's output, as LwF asks of an old model
            return self.forward_all_tasks(x)
        if isinstance(task_labels, int):
            return self.forward_single_task(x, task_labels)
        tasks = torch.unique(task_labels)
        if len(tasks) == 1:
            return self.forward_single_task(x, int(tasks[0]))
        out = torch.full((x.shape[0], self.max_class_label), self.PAD, device=x.device)
        for task in tasks:
            mask = task_labels == task
            logits = self.forward_single_task(x[mask], int(task))
            out[mask, : logits.shape[1]] = logits
        return out


class TaskILNet(MultiHeadModule):
    """Task-IL: a shared backbone and one head per task, chosen by the task label."""

    def __init__(self, features: nn.Module, initial_classes: int = 2):
        super().__init__()
        self.features = features
        self.classifier = MultiHeadClassifier(features.out_features, initial_out_features=initial_classes)

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.classifier.forward_single_task(self.features(x), task_label)

    def forward_all_tasks(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        # the backbone once for every head (LwF asks an old model for all its tasks' outputs)
        features = self.features(x)
        return {t: self.classifier.forward_single_task(features, t) for t in self.known_train_tasks_labels}


def usable_params(model: nn.Module) -> int:
    """The model's parameters less the units of task heads that their own task never uses.

    Avalanche adapts every head of a MultiHeadClassifier to every experience it is shown, so
    joint training, shown all tasks at once, sizes every head at the largest task's class count
    (each Omniglot head at 55 units); the units beyond a task's own classes are masked: they take
    no gradient and no part in any output, so they are not counted. Heads sized to their task
    (every sequential strategy's) lose nothing.
    """
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, MultiHeadClassifier) and module.masking:
            for task, head in module.classifiers.items():
                active = getattr(module, f"active_units_T{task}")
                unused = head.classifier.out_features - int(active.sum())
                total -= unused * (head.classifier.in_features + 1)
    return total
