"""The progressive network: columns built from a backbone spec, one per task."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from bench.heads import MultiHeadModule
from bench.models import BackboneSpec, Preprocess, before_layer, make_layer, pool_after


def scaled(spec: BackboneSpec, factor: float) -> BackboneSpec:
    layers = tuple(dataclasses.replace(l, width=max(1, round(l.width * factor))) for l in spec.layers)
    return dataclasses.replace(spec, layers=layers)


class Adapter(nn.Module):
    """The lateral link into one layer of a column from all earlier columns (Rusu et al.'s eq. 2).

    Each earlier column's output of the layer below is scaled by a learned scalar, the
    scaled outputs are joined and projected (V) onto one column's size, and after a ReLU
    mapped into the layer like its own input (U). One full link per earlier column, summed,
    grows the layer's input with the number of columns and compounds over layers (at init
    the 45th column's logits spread 60x the first's); V's fan-in grows with the columns
    instead, which keeps the scale.

    Where the layer below is a convolution, its output is a map, and V is a 1x1 convolution
    on the joined maps, as the paper does for convolutional layers; a fully connected layer
    fed by that map reads V's output only then, flattened. V keeps one column's channels
    (k earlier columns' k*c channels -> c): the paper's projection onto an n_(i-1)-dimensional
    space (one column's activations, c*h*w values for a map), i.e. a reduction by the number
    of earlier columns, which keeps the lateral parameters of the order of one column's. A
    dense V on the flattened maps instead held k*(c*h*w)^2 weights: 25.4 M of the 27.2 M
    parameters of Omniglot's 50 quarter-width columns.
    """

    def __init__(self, spec: BackboneSpec, index: int, n_earlier: int):
        super().__init__()
        below = spec.layers[index - 1]
        self.reads_map = below.kind == "conv"
        n = below.width if self.reads_map else spec.in_features(index)  # channels of a map, else units
        # the paper starts the scalars small, so a new column first learns mostly from its own path
        self.alphas = nn.Parameter(torch.full((n_earlier,), 0.1))
        self.V = nn.Conv2d(n_earlier * n, n, 1) if self.reads_map else nn.Linear(n_earlier * n, n)
        self.U = make_layer(spec, index)
        self.flatten = self.reads_map and spec.layers[index].kind == "linear"

    def forward(self, earlier: list[torch.Tensor]) -> torch.Tensor:
        scaled = [a * h for a, h in zip(self.alphas, earlier)]
        reduced = torch.relu(self.V(torch.cat(scaled, dim=1)))
        return self.U(reduced.flatten(1) if self.flatten else reduced)


class Column(nn.Module):
    """One task's copy of the backbone, with a lateral adapter from the earlier columns per layer."""

    def __init__(self, spec: BackboneSpec, n_earlier: int, n_classes: int):
        super().__init__()
        n = len(spec.layers)
        self.layers = nn.ModuleList(make_layer(spec, i) for i in range(n))
        # adapters[i - 1]: the earlier columns' layer i-1 outputs -> this column's layer i
        self.adapters = nn.ModuleList(Adapter(spec, i, n_earlier) for i in range(1, n)) if n_earlier else None
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
        hs = [h0] * (k + 1)  # each column's output of the layer below; maps stay maps for the adapters
        for i, layer in enumerate(self.spec.layers):
            new = []
            for j in range(k + 1):
                column = self.columns[j]
                z = column.layers[i](hs[j].flatten(1) if layer.kind == "linear" else hs[j])
                if i > 0 and j > 0:
                    z = z + column.adapters[i - 1](hs[:j])
                new.append(pool_after(self.spec, i, torch.relu(z)))
            hs = new
        return self.columns[k].head(hs[k].flatten(1))
