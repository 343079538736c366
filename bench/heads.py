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


class TaskILNet(MultiTaskModule):
    """Task-IL: a shared backbone and one head per task, chosen by the task label."""

    def __init__(self, features: nn.Module, initial_classes: int = 2):
        super().__init__()
        self.features = features
        self.classifier = MultiHeadClassifier(features.out_features, initial_out_features=initial_classes)

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.classifier.forward_single_task(self.features(x), task_label)
