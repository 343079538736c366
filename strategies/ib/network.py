"""The IB-gated network: the backbone's layers, each followed by a Gaussian gate per channel."""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from bench.heads import MultiHeadModule
from bench.models import (BackboneSpec, Preprocess, after_layer, before_layer, flatten_after, make_layer,
                          pool_after)


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
        # the task (count of tasks trained before it) after which each frozen channel froze; -1: not frozen
        self.register_buffer("since", torch.full((width,), -1, dtype=torch.long))

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

    def forward(self, h: torch.Tensor, threshold: float, frozen_noise: bool,
                keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Every channel: noisy gates while training (deterministic on frozen channels unless
        frozen_noise); at test time mu on the channels in `keep` (default: past the threshold)
        and 0 elsewhere."""
        z = torch.relu(self.layer(h))
        shape = (1, -1, 1, 1) if z.dim() == 4 else (1, -1)
        if self.training:
            sigma = self.log_sigma.exp()
            if not frozen_noise:
                sigma = torch.where(self.frozen, torch.zeros_like(sigma), sigma)
            eps = torch.randn_like(z)
            gate = self.mu.view(shape) + sigma.view(shape) * eps
        else:
            if keep is None:
                keep = (self.mu / self.log_sigma.exp()) ** 2 >= threshold
            gate = torch.where(keep, self.mu, torch.zeros_like(self.mu)).view(shape)
        return z * gate

    def rows(self, inputs: list[tuple[torch.Tensor, Optional[torch.Tensor]]], rows: torch.Tensor,
             noisy: bool = False) -> torch.Tensor:
        """Gated output of the channels `rows` only, from inputs given in parts: each (h, cols) is a
        tensor holding the input channels `cols` (all when None) in their order; the parts' weighted
        sums add up. The gate is mu, or mu + sigma * eps when noisy."""
        mu = self.mu.index_select(0, rows)
        w = self.layer.weight.index_select(0, rows)
        b = self.layer.bias.index_select(0, rows)
        # relu(a) * mu == relu(a * mu) for mu > 0: a deterministic positive gate is folded into the
        # weights, which saves a pass over the (large) output map
        fold = not noisy and bool((mu > 0).all())
        if fold:
            w, b = w * mu.view(-1, *([1] * (w.dim() - 1))), b * mu
        z = None
        for h, cols in inputs:
            part = w if cols is None else w.index_select(1, cols)
            bias = b if z is None else None
            if self.conv:
                out = nn.functional.conv2d(h, part, bias, self.layer.stride, self.layer.padding, self.layer.dilation)
            else:
                out = nn.functional.linear(h, part, bias)
            z = out if z is None else z + out
        z = torch.relu(z)
        if fold:
            return z
        shape = (1, -1, 1, 1) if z.dim() == 4 else (1, -1)
        if not noisy:
            return z * mu.view(shape)
        sigma = self.log_sigma.exp().index_select(0, rows).view(shape)
        return z * (mu.view(shape) + sigma * torch.randn_like(z))


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

    def forward(self, x: torch.Tensor, upto: Optional[int] = None) -> torch.Tensor:
        """The last hidden layer's features, all channels in their order.

        Frozen channels read only frozen channels (their other input weights are 0), so once some
        are frozen the network is computed in two parts: the frozen channels as a compact network
        without gradients, and the free channels, which read every channel of the layer below.
        At test time only the channels past the threshold are computed (the others' gate is 0);
        `upto` keeps only those frozen by the end of that task (counted from 0), the channels a
        frozen Task-IL head reads. Same function as the dense forward, at the cost of what it uses.
        """
        h = self.preprocess(x)
        if self.training:
            fixed = None if self.frozen_noise else [g.frozen for g in self.layers]
            if fixed is not None and all(bool(f.any()) and not bool(f.all()) for f in fixed):
                return self._in_parts(h, fixed, train_rest=True)
            return self._dense(h)
        keep = [g.ratio2() >= self.threshold for g in self.layers]
        if upto is not None:
            keep = [k & (g.since >= 0) & (g.since <= upto) for k, g in zip(keep, self.layers)]
        if all(bool(k.any()) for k in keep):
            return self._in_parts(h, keep, train_rest=False)
        return self._dense(h, keep)

    def _dense(self, h: torch.Tensor, keep: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
        """Every channel of every layer (the parts need a fixed and, when training, a free channel
        in each layer)."""
        for i, gated in enumerate(self.layers):
            h = before_layer(self.spec, i, h)
            h = gated(h, self.threshold, self.frozen_noise, None if keep is None else keep[i])
            h = after_layer(self.spec, i, h)
        return h

    def _in_parts(self, h: torch.Tensor, fixed: list[torch.Tensor], train_rest: bool) -> torch.Tensor:
        """`fixed` channels with gate mu, without gradients; with train_rest, the other channels
        with noisy gates, reading all channels below; without, the other channels are 0.

        The two parts stay separate tensors up to the last layer (a free channel reads both), so
        no layer's full-width map is assembled but the last one's."""
        compact = before_layer(self.spec, 0, h)  # the fixed channels of the layer below (first: the input)
        rest = None  # its free channels
        for i, gated in enumerate(self.layers):
            rows = fixed[i].nonzero().flatten()
            cols = None if i == 0 else self.input_mask(i, fixed[i - 1]).nonzero().flatten()
            with torch.no_grad():
                z_fixed = pool_after(self.spec, i, gated.rows([(compact, cols)], rows))
            if train_rest:
                free = (~fixed[i]).nonzero().flatten()
                inputs = [(compact, cols)]
                if rest is not None:
                    inputs.append((rest, self.input_mask(i, ~fixed[i - 1]).nonzero().flatten()))
                rest = flatten_after(self.spec, i, pool_after(self.spec, i, gated.rows(inputs, free, noisy=True)))
            compact = flatten_after(self.spec, i, z_fixed)
        last = len(self.layers)
        out = _scatter(compact, self.input_mask(last, fixed[-1]).nonzero().flatten(), self.out_features)
        if train_rest:
            out = out.index_copy(1, self.input_mask(last, ~fixed[-1]).nonzero().flatten(), rest)
        return out

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
        gated.since = torch.cat([gated.since, torch.full((k,), -1, dtype=torch.long, device=device)])
        if index + 1 < len(self.layers):
            nxt = self.layers[index + 1]
            if nxt.conv:
                nxt.layer.weight = _pad_inputs(nxt.layer.weight, k, dim=1)
                nxt.layer.in_channels += k
            else:
                nxt.layer.weight = _pad_inputs(nxt.layer.weight, k * self.spatial[index], dim=1)
                nxt.layer.in_features += k * self.spatial[index]


def _scatter(part: torch.Tensor, channels: torch.Tensor, width: int) -> torch.Tensor:
    """A [batch, len(channels)] tensor placed at `channels` of a zero [batch, width] one."""
    return part.new_zeros((part.shape[0], width)).index_copy(1, channels, part)


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


class IBNet(MultiHeadModule):
    """IB-gated backbone with one head per task (multi_head) or one growing head (Class-IL).

    Multi-head outputs of a smaller head are padded with bench.heads.MultiHeadModule.PAD, not
    Avalanche's zeros, which beat a head whose logits are all negative. `last_features` holds the features of the latest forward, for nearest-class-mean scoring.
    """

    def __init__(self, spec: BackboneSpec, multi_head: bool, **gate_kwargs):
        super().__init__()
        self.features = IBFeatures(spec, **gate_kwargs)
        self.multi_head = multi_head
        self.heads = nn.ModuleDict()  # task label -> Linear (multi-head)
        self.head: Optional[nn.Linear] = None  # Class-IL output layer
        self.frozen_heads: dict[str, int] = {}  # head -> the task (from 0) it was frozen after
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
        # a frozen head reads only the channels frozen by its task: compute no others
        upto = None if self.training else self.frozen_heads.get(str(task_label))
        self.last_features = self.features(x, upto)
        return self.heads[str(task_label)](self.last_features)

    def grow(self, index: int, k: int) -> None:
        self.features.grow(index, k)
        if index == len(self.features.layers) - 1:
            n = k * self.features.spatial[index]
            for head in [*self.heads.values(), *([self.head] if self.head is not None else [])]:
                _pad_linear_inputs(head, n)
