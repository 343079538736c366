"""The progressive network: columns built from a backbone spec, one per task."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from bench.heads import MultiHeadModule
from bench.models import BackboneSpec, Preprocess, after_layer, before_layer, make_layer


def scaled(spec: BackboneSpec, factor: float) -> BackboneSpec:
    layers = tuple(dataclasses.replace(l, width=max(1, round(l.width * factor))) for l in spec.layers)
    return dataclasses.replace(spec, layers=layers)


class Column(nn.Module):
    """One task's copy of the backbone, with lateral inputs from each earlier column."""

    def __init__(self, spec: BackboneSpec, n_earlier: int, n_classes: int):
        super().__init__()
        n = len(spec.layers)
        self.layers = nn.ModuleList(make_layer(spec, i) for i in range(n))
        # laterals[i - 1][j]: column j's layer i-1 output -> this column's layer i
        self.laterals = nn.ModuleList(
            nn.ModuleList(make_layer(spec, i) for _ in range(n_earlier)) for i in range(1, n))
        self.head = nn.Linear(spec.out_features, n_classes)


class ProgressiveNet(MultiHeadModule):
    def __init__(self, spec: BackboneSpec, first_task_classes: int, width_factor: float = 1.0):
        super().__init__()
        self.spec = scaled(spec, width_factor)
        self.preprocess = Preprocess(spec.mean, spec.std)
        # the first column exists from the start so the optimizer has parameters to hold
        self.columns = nn.ModuleList([Column(self.spec, 0, first_task_classes)])
        self.column_of_task: dict[int, int] = {0: 0}

    def adaptation(self, experience) -> None:
        super().adaptation(experience)
        if not self.training:
            return
        for task in experience.task_labels:
            if task not in self.column_of_task:
                for p in self.columns.parameters():
                    p.requires_grad_(False)
                n_classes = max(experience.classes_in_this_experience) + 1
                self.column_of_task[task] = len(self.columns)
                self.columns.append(Column(self.spec, len(self.columns), n_classes).to(self._device()))

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        k = self.column_of_task[task_label]
        h0 = before_layer(self.spec, 0, self.preprocess(x))
        hs = [h0] * (k + 1)
        for i in range(len(self.spec.layers)):
            new = []
            for j in range(k + 1):
                column = self.columns[j]
                z = column.layers[i](hs[j])
                if i > 0:
                    for e in range(j):
                        z = z + column.laterals[i - 1][e](hs[e])
                new.append(after_layer(self.spec, i, torch.relu(z)))
            hs = new
        return self.columns[k].head(hs[k])
