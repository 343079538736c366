"""The IB-gated network: the backbone's layers, each followed by a Gaussian gate per channel."""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from avalanche.models import MultiTaskModule
from torch import nn

from bench.models import BackboneSpec, Preprocess, after_layer, before_layer, make_layer


class GatedLayer(nn.Module):
    """One hidden layer: weights (conv or linear), ReLU, then a Gaussian gate per output channel."""

    def __init__(self, layer: nn.Module, mu_init: float, sigma_init: float):
        super().__init__()
        self.layer = layer
        width = layer.weight.shape[0]
        self.mu_init, self.sigma_init = mu_init, sigma_init
        self.mu = nn.Parameter(torch.full((width,), float(mu_init)))
        self.log_sigma = nn.Parameter(torch.full((width,), math.log(sigma_init)))
        # channels active for earlier tasks: frozen, deterministic gate
        self.register_buffer("frozen", torch.zeros(width, dtype=torch.bool))

    @property
    def width(self) -> int:
        return self.mu.shape[0]

    @property
    def conv(self) -> bool:
        return isinstance(self.layer, nn.Conv2d)

    def ratio2(self) -> torch.Tensor:
        """(mu / sigma)^2 per channel (no gradient)."""
        with torch.no_grad():
            return (self.mu / self.log_sigma.exp()) ** 2

    def information(self) -> torch.Tensor:
        """log(1 + (mu/sigma)^2) per channel: the information the channel passes on (differentiable)."""
        return torch.log1p((self.mu / self.log_sigma.exp()) ** 2)

    def forward(self, h: torch.Tensor, threshold: float, frozen_noise: bool) -> torch.Tensor:
        z = torch.relu(self.layer(h))
        shape = (1, -1, 1, 1) if z.dim() == 4 else (1, -1)
        if self.training:
            sigma = self.log_sigma.exp()
            if not frozen_noise:
                sigma = torch.where(self.frozen, torch.zeros_like(sigma), sigma)
            eps = torch.randn_like(z)
            gate = self.mu.view(shape) + sigma.view(shape) * eps
        else:
            keep = (self.mu / self.log_sigma.exp()) ** 2 >= threshold
            gate = torch.where(keep, self.mu, torch.zeros_like(self.mu)).view(shape)
        return z * gate


class IBFeatures(nn.Module):
    """The spec's hidden layers, each followed by a gate; returns the (flattened) last hidden layer."""

    def __init__(self, spec: BackboneSpec, threshold: float = 1.0, mu_init: float = 1.0,
                 sigma_init: float = 0.3, frozen_noise: bool = False):
        super().__init__()
        self.spec = spec
        self.threshold = threshold
        self.frozen_noise = frozen_noise
        self.preprocess = Preprocess(spec.mean, spec.std)
        self.layers = nn.ModuleList(GatedLayer(make_layer(spec, i), mu_init, sigma_init)
                                    for i in range(len(spec.layers)))
        # positions per channel where a conv map is flattened into the next linear layer (1 otherwise)
        self.spatial = _flat_positions(spec)

    @property
    def widths(self) -> list[int]:
        return [g.width for g in self.layers]

    @property
    def out_features(self) -> int:
        return self.layers[-1].width * self.spatial[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.preprocess(x)
        for i, gated in enumerate(self.layers):
            h = before_layer(self.spec, i, h)
            h = after_layer(self.spec, i, gated(h, self.threshold, self.frozen_noise))
        return h

    def active(self) -> list[torch.Tensor]:
        """Channels whose gate passes the threshold, per layer."""
        return [g.ratio2() >= self.threshold for g in self.layers]

    def input_mask(self, index: int, channels: torch.Tensor) -> torch.Tensor:
        """A channel mask of layer index-1 as a mask over the inputs of layer `index` (or of the
        heads when index == len(layers)): a flattened conv channel covers several inputs."""
        spatial = self.spatial[index - 1]
        if index < len(self.layers) and self.layers[index].conv:
            return channels
        return channels.repeat_interleave(spatial)

    def grow(self, index: int, k: int) -> None:
        """Add k inactive channels to layer `index` and zero input weights for them downstream."""
        gated = self.layers[index]
        old = gated.layer
        n_in = old.weight.shape[1] if gated.conv else old.in_features
        device = old.weight.device
        fresh = make_layer(self.spec, index, in_features=n_in, width=gated.width + k).to(device)
        with torch.no_grad():
            fresh.weight[: gated.width] = old.weight
            fresh.bias[: gated.width] = old.bias
        gated.layer = fresh
        gated.mu = nn.Parameter(torch.cat([gated.mu.data, torch.full((k,), float(gated.mu_init), device=device)]))
        gated.log_sigma = nn.Parameter(torch.cat([gated.log_sigma.data,
                                                  torch.full((k,), math.log(gated.sigma_init), device=device)]))
        gated.frozen = torch.cat([gated.frozen, torch.zeros(k, dtype=torch.bool, device=device)])
        if index + 1 < len(self.layers):
            nxt = self.layers[index + 1]
            if nxt.conv:
                nxt.layer.weight = _pad_inputs(nxt.layer.weight, k, dim=1)
                nxt.layer.in_channels += k
            else:
                nxt.layer.weight = _pad_inputs(nxt.layer.weight, k * self.spatial[index], dim=1)
                nxt.layer.in_features += k * self.spatial[index]


def _flat_positions(spec: BackboneSpec) -> list[int]:
    h, w = spec.in_shape[1:]
    out = []
    for layer in spec.layers:
        if layer.kind == "conv":
            if layer.pool:
                h, w = h // 2, w // 2
            out.append(h * w)
        else:
            h = w = 1
            out.append(1)
    return out


def _pad_inputs(weight: torch.Tensor, n: int, dim: int) -> nn.Parameter:
    shape = list(weight.shape)
    shape[dim] = n
    return nn.Parameter(torch.cat([weight.data, weight.new_zeros(shape)], dim=dim))


def _pad_linear_inputs(linear: nn.Linear, n: int) -> None:
    linear.weight = _pad_inputs(linear.weight, n, dim=1)
    linear.in_features += n


class IBNet(MultiTaskModule):
    """IB-gated backbone with one head per task (multi_head) or one growing head (Class-IL).

    `last_features` holds the features of the latest forward, for nearest-class-mean scoring.
    """

    def __init__(self, spec: BackboneSpec, multi_head: bool, **gate_kwargs):
        super().__init__()
        self.features = IBFeatures(spec, **gate_kwargs)
        self.multi_head = multi_head
        self.heads = nn.ModuleDict()  # task label -> Linear (multi-head)
        self.head: Optional[nn.Linear] = None  # Class-IL output layer
        self.frozen_heads: set[str] = set()
        self.last_features: Optional[torch.Tensor] = None

    def adaptation(self, experience) -> None:
        super().adaptation(experience)
        n_out = max(experience.classes_in_this_experience) + 1
        n_in = self.features.out_features
        if self.multi_head:
            for t in experience.task_labels:
                if str(t) not in self.heads:
                    self.heads[str(t)] = nn.Linear(n_in, n_out).to(self._adaptation_device)
        elif self.head is None or self.head.out_features < n_out:
            new = nn.Linear(n_in, n_out).to(self._adaptation_device)
            if self.head is not None:
                with torch.no_grad():  # keep the rows of classes already seen
                    new.weight[: self.head.out_features] = self.head.weight
                    new.bias[: self.head.out_features] = self.head.bias
            self.head = new

    def forward(self, x: torch.Tensor, task_labels: Any = None) -> torch.Tensor:
        if self.multi_head:
            return super().forward(x, task_labels)
        self.last_features = self.features(x)
        return self.head(self.last_features)

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        self.last_features = self.features(x)
        return self.heads[str(task_label)](self.last_features)

    def grow(self, index: int, k: int) -> None:
        self.features.grow(index, k)
        if index == len(self.features.layers) - 1:
            n = k * self.features.spatial[index]
            for head in [*self.heads.values(), *([self.head] if self.head is not None else [])]:
                _pad_linear_inputs(head, n)
