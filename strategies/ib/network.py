"""The IB-gated network: the backbone's layers, each followed by a Gaussian gate per channel."""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Optional

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
        # the task (count of tasks trained before it) after which each channel froze; -1: free. The
        # one record of which channels are frozen (`frozen` reads it), so the two cannot disagree.
        self.register_buffer("since", torch.full((width,), -1, dtype=torch.long))

    @property
    def frozen(self) -> torch.Tensor:
        """Channels active for earlier tasks (frozen, deterministic gate): a new mask, read-only."""
        return self.since >= 0

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
            eps = _noise_like(z)
            gate = self.mu.view(shape) + sigma.view(shape) * eps
        else:
            if keep is None:
                keep = (self.mu / self.log_sigma.exp()) ** 2 >= threshold
            gate = torch.where(keep, self.mu, torch.zeros_like(self.mu)).view(shape)
        return z * gate

    def linear_map(self, h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """The layer's conv or linear map with the given weights (some of its rows, some inputs)."""
        if self.conv:
            layer = self.layer
            return nn.functional.conv2d(h, weight, bias, layer.stride, layer.padding, layer.dilation)
        return nn.functional.linear(h, weight, bias)

    def rows(self, h: torch.Tensor, cols: Optional[torch.Tensor], rows: torch.Tensor,
             pool: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Output of the channels `rows` only, with the deterministic gate mu, pooled by `pool`, from
        `h`, which holds the input channels `cols` (all when None) in their order."""
        w, b, mu = _folded(self.layer.weight.index_select(0, rows), self.layer.bias.index_select(0, rows),
                           self.mu.index_select(0, rows))
        return _deterministic(self.linear_map(h, w if cols is None else w.index_select(1, cols), b), mu, pool)


class FreeRows:
    """One layer's split for a task's training (made by IBFeatures.begin_task, undone by end_task).

    The frozen rows cannot change during the task: they are kept as one compact block (their gate
    folded in where it can be), read without gradients. The free rows' weights become tensors of
    their own, one per part of the layer below (its frozen and its free channels): the optimizer
    trains these in place of the layer's weight, so its step, its state and the gradients cover
    the free rows only, and no per-step indexing of the full weight is left.
    """

    def __init__(self, gated: GatedLayer, parts: list[Optional[torch.Tensor]],
                 pool: Callable[[torch.Tensor], torch.Tensor]):
        self.gated, self.pool = gated, pool
        self.parts = parts  # the layer-below columns each part holds (None: the whole input)
        self.free = (~gated.frozen).nonzero().flatten()
        fixed = gated.frozen.nonzero().flatten()
        with torch.no_grad():
            weight = gated.layer.weight
            block = weight.index_select(0, fixed)
            if parts[0] is not None:  # frozen rows read only the frozen part below
                block = block.index_select(1, parts[0])
            self.fixed = _folded(block, gated.layer.bias.index_select(0, fixed), gated.mu.index_select(0, fixed))
            rows = weight.index_select(0, self.free)
            self.weights = [nn.Parameter(rows if cols is None else rows.index_select(1, cols)) for cols in parts]

    def fixed_out(self, h: torch.Tensor) -> torch.Tensor:
        """The frozen rows' pooled output (gate mu)."""
        w, b, mu = self.fixed
        with torch.no_grad():
            return _deterministic(self.gated.linear_map(h, w, b), mu, self.pool)

    def free_out(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """The free rows' pooled output with noisy gates mu + sigma * eps, from the parts below in order."""
        gated = self.gated
        z = gated.linear_map(inputs[0], self.weights[0], gated.layer.bias.index_select(0, self.free))
        for h, w in zip(inputs[1:], self.weights[1:]):
            z = z + gated.linear_map(h, w, None)
        z = torch.relu_(z)  # in place: the map's backward needs only its inputs
        shape = (1, -1, 1, 1) if z.dim() == 4 else (1, -1)
        mu = gated.mu.index_select(0, self.free).view(shape)
        sigma = gated.log_sigma.exp().index_select(0, self.free).view(shape)
        return self.pool(z * torch.addcmul(mu, sigma, _noise_like(z)))

    def write_back(self) -> None:
        """The free rows' trained weights into the layer's weight."""
        with torch.no_grad():
            weight = self.gated.layer.weight
            for cols, w in zip(self.parts, self.weights):
                if cols is None:
                    weight[self.free] = w
                else:
                    weight[self.free.view(-1, 1), cols.view(1, -1)] = w


def _folded(w: torch.Tensor, b: torch.Tensor,
            mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(w, b, mu) of rows gated by a deterministic mu; relu(a) * mu == relu(a * mu) for mu > 0, so a
    positive gate is folded into the weights (mu None), which saves a pass over the output map."""
    if bool((mu > 0).all()):
        return w * mu.view(-1, *([1] * (w.dim() - 1))), b * mu, None
    return w, b, mu


def _noise_like(z: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like z and in its memory layout. A channels-last map's noise is
    drawn as a contiguous [n, h, w, c] tensor: torch's CPU sampler is several times slower when
    it fills a channels-last tensor (randn_like) than a contiguous one."""
    if z.dim() == 4 and not z.is_contiguous() and z.is_contiguous(memory_format=torch.channels_last):
        n, c, h, w = z.shape
        return torch.randn(n, h, w, c, dtype=z.dtype, device=z.device).permute(0, 3, 1, 2)
    return torch.randn_like(z)


def _deterministic(z: torch.Tensor, mu: Optional[torch.Tensor],
                   pool: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """pool(relu(z) * mu); with the gate folded in (mu None), pooled before the relu, which
    commutes with max-pooling, so the relu runs on the smaller map."""
    if mu is None:
        return torch.relu_(pool(z))
    return pool(torch.relu_(z) * mu.view((1, -1, 1, 1) if z.dim() == 4 else (1, -1)))


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
        self._split: Optional[list[FreeRows]] = None  # while a task trains in two parts
        self._out_cols: tuple[torch.Tensor, torch.Tensor] = ()  # its frozen and free output columns

    @property
    def widths(self) -> list[int]:
        return [g.width for g in self.layers]

    @property
    def out_features(self) -> int:
        return self.layers[-1].width * self.spatial[-1]

    def forward(self, x: torch.Tensor, upto: Optional[int] = None) -> torch.Tensor:
        """The last hidden layer's features, all channels in their order.

        Frozen channels read only frozen channels (their other input weights are 0), so while a
        task trains (after `begin_task`) the network is computed in two parts: the frozen channels
        as a compact network without gradients, and the free channels, which read every channel
        of the layer below. At test time only the channels past the threshold are computed (the
        others' gate is 0); `upto` keeps only those frozen by the end of that task (counted from
        0), the channels a frozen Task-IL head reads. Same function as the dense forward, at the
        cost of what it uses.
        """
        h = self.preprocess(x)
        if self.training:
            return self._dense(h) if self._split is None else self._two_parts(h)
        if self._split is not None:  # evaluated in the middle of a task
            for split in self._split:
                split.write_back()
        keep = [g.ratio2() >= self.threshold for g in self.layers]
        if upto is not None:
            keep = [k & (g.since >= 0) & (g.since <= upto) for k, g in zip(keep, self.layers)]
        if all(bool(k.any()) for k in keep):
            return self._kept(h, keep)
        return self._dense(h, keep)

    def begin_task(self) -> list[nn.Parameter]:
        """Splits every layer into its frozen and free rows for a task's training, when every layer
        has both (and frozen channels run without noise); returns the free rows' weights, which
        the optimizer trains in place of the layers' weights until `end_task`."""
        fixed = [g.frozen for g in self.layers]
        if self.frozen_noise or not all(bool(f.any()) and not bool(f.all()) for f in fixed):
            return []
        self._split = []
        for i, gated in enumerate(self.layers):
            parts = [None] if i == 0 else [self.input_mask(i, f).nonzero().flatten()
                                           for f in (fixed[i - 1], ~fixed[i - 1])]
            self._split.append(FreeRows(gated, parts, partial(pool_after, self.spec, i)))
            gated.layer.weight.requires_grad_(False)
        last = len(self.layers)
        self._out_cols = tuple(self.input_mask(last, f).nonzero().flatten() for f in (fixed[-1], ~fixed[-1]))
        return [w for split in self._split for w in split.weights]

    def end_task(self) -> None:
        """The free rows' trained weights back into the layers, which train whole again."""
        for split in self._split or []:
            split.write_back()
            split.gated.layer.weight.requires_grad_(True)
        self._split = None

    def _dense(self, h: torch.Tensor, keep: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
        """Every channel of every layer (the parts need a fixed and, when training, a free channel
        in each layer)."""
        for i, gated in enumerate(self.layers):
            h = before_layer(self.spec, i, h)
            h = gated(h, self.threshold, self.frozen_noise, None if keep is None else keep[i])
            h = after_layer(self.spec, i, h)
        return h

    def _two_parts(self, h: torch.Tensor) -> torch.Tensor:
        """Training after `begin_task`. The two parts stay separate tensors up to the last layer
        (a free channel reads both), so no full-width map is assembled but the last one."""
        compact = before_layer(self.spec, 0, h)  # the frozen channels of the layer below (first: the input)
        rest: list[torch.Tensor] = []  # its free channels (first: none)
        for i, split in enumerate(self._split):
            rest = [flatten_after(self.spec, i, split.free_out([compact, *rest]))]
            compact = flatten_after(self.spec, i, split.fixed_out(compact))
        fixed_cols, free_cols = self._out_cols
        return _scatter(compact, fixed_cols, self.out_features).index_copy(1, free_cols, rest[0])

    def _kept(self, h: torch.Tensor, keep: list[torch.Tensor]) -> torch.Tensor:
        """Evaluation: the `keep` channels with gate mu as a compact network; the others are 0."""
        compact = before_layer(self.spec, 0, h)
        for i, gated in enumerate(self.layers):
            cols = None if i == 0 else self.input_mask(i, keep[i - 1]).nonzero().flatten()
            rows = keep[i].nonzero().flatten()
            pooled = gated.rows(compact, cols, rows, partial(pool_after, self.spec, i))
            compact = flatten_after(self.spec, i, pooled)
        cols = self.input_mask(len(self.layers), keep[-1]).nonzero().flatten()
        return _scatter(compact, cols, self.out_features)

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
    Avalanche's zeros, which beat a head whose logits are all negative. `last_features` holds the
    features of the latest forward, for nearest-class-mean scoring.
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
