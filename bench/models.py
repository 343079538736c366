"""Backbones: one per dataset, the same for every strategy in a table.

A backbone is described by a `BackboneSpec` (input shape, a list of hidden
layers) so that methods which rebuild the network layer by layer (progressive
networks, the IB sparse method) build exactly the same layers as the others.
Inputs arrive as uint8 images; `Preprocess` turns them into normalised floats
inside the model, so data stays compact in memory and in replay buffers.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class Layer:
    """One hidden layer: a 3x3 convolution or a fully connected layer, then ReLU."""

    kind: str  # "conv" or "linear"
    width: int  # output channels (conv) or units (linear)
    pool: bool = False  # 2x2 max-pool after the activation (conv only)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    in_shape: tuple[int, int, int]  # C, H, W of the uint8 input
    layers: tuple[Layer, ...]
    mean: float = 0.0
    std: float = 1.0

    def in_features(self, index: int) -> int:
        """Number of inputs of hidden layer `index` (channels for conv, flat size for linear)."""
        c, h, w = self.in_shape
        for layer in self.layers[:index]:
            if layer.kind == "conv":
                c = layer.width
                if layer.pool:
                    h, w = h // 2, w // 2
            else:
                c, h, w = layer.width, 1, 1
        if self.layers[index].kind == "conv":
            return c
        return c * h * w

    @property
    def out_features(self) -> int:
        last = self.layers[-1]
        if last.kind == "linear":
            return last.width
        c, h, w = self.in_shape
        for layer in self.layers:
            if layer.pool:
                h, w = h // 2, w // 2
        return last.width * h * w


BACKBONES: dict[str, BackboneSpec] = {
    # The reference's Split-MNIST network: two hidden layers of 400 units.
    "mlp": BackboneSpec("mlp", (1, 28, 28), (Layer("linear", 400), Layer("linear", 400)),
                        mean=0.1307, std=0.3081),
    # ~22 MFLOP per 32x32 image: about three times faster than the usual 4-conv
    # CIFAR net on two CPU cores, so a whole CIFAR table fits in a session.
    "convnet32": BackboneSpec("convnet32", (3, 32, 32),
                              (Layer("conv", 32, pool=True), Layer("conv", 64, pool=True),
                               Layer("conv", 128, pool=True), Layer("linear", 256)),
                              mean=0.4734, std=0.2516),
    # VGG-16 for 32x32 inputs (the reference's compression experiment, III (b)): 13 3x3 convs in
    # five blocks and two hidden linear layers of 512 (the classifier is the third). No batch
    # norm, as in every spec backbone. ~15 M parameters, ~0.3 GFLOP per image: for GPU runs.
    "vgg16": BackboneSpec("vgg16", (3, 32, 32),
                          (Layer("conv", 64), Layer("conv", 64, pool=True),
                           Layer("conv", 128), Layer("conv", 128, pool=True),
                           Layer("conv", 256), Layer("conv", 256), Layer("conv", 256, pool=True),
                           Layer("conv", 512), Layer("conv", 512), Layer("conv", 512, pool=True),
                           Layer("conv", 512), Layer("conv", 512), Layer("conv", 512, pool=True),
                           Layer("linear", 512), Layer("linear", 512)),
                          mean=0.4734, std=0.2516),
    # Omniglot characters resized to 28x28 (white strokes on black after inversion). Mean and std of
    # the training images (drawers 1-15): unnormalised, the mostly black input left training on a
    # plateau for epochs (joint training, seed 1: at chance after 10 epochs; 60% after 2 with it).
    "convnet28": BackboneSpec("convnet28", (1, 28, 28),
                              (Layer("conv", 32, pool=True), Layer("conv", 64, pool=True),
                               Layer("conv", 64, pool=True), Layer("linear", 256)),
                              mean=0.0808, std=0.2193),
}

DEFAULT_BACKBONE = {"mnist": "mlp", "cifar10": "convnet32", "cifar100": "convnet32",
                    "omniglot": "convnet28"}


class Preprocess(nn.Module):
    """uint8 images -> normalised float tensors."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std


def make_layer(spec: BackboneSpec, index: int, in_features: int | None = None,
               width: int | None = None) -> nn.Module:
    """The weight layer (conv or linear) of hidden layer `index`; sizes may be overridden."""
    layer = spec.layers[index]
    n_in = spec.in_features(index) if in_features is None else in_features
    n_out = layer.width if width is None else width
    if layer.kind == "conv":
        return nn.Conv2d(n_in, n_out, kernel_size=3, padding=1)
    return nn.Linear(n_in, n_out)


def after_layer(spec: BackboneSpec, index: int, h: torch.Tensor) -> torch.Tensor:
    """Pooling and flattening that follow hidden layer `index` (after its activation)."""
    return flatten_after(spec, index, pool_after(spec, index, h))


def pool_after(spec: BackboneSpec, index: int, h: torch.Tensor) -> torch.Tensor:
    """The pooling that follows hidden layer `index` (per channel), if any.

    On channels-last maps: torch's CPU max-pooling is several times faster on them than on
    NCHW ones, and the convolutions that read the pooled map keep its layout."""
    if not spec.layers[index].pool:
        return h
    return nn.functional.max_pool2d(h.contiguous(memory_format=torch.channels_last), 2)


def flatten_after(spec: BackboneSpec, index: int, h: torch.Tensor) -> torch.Tensor:
    """Flattens a conv map that feeds a linear layer (or leaves the backbone), channel-major."""
    nxt = spec.layers[index + 1] if index + 1 < len(spec.layers) else None
    if h.dim() > 2 and (nxt is None or nxt.kind == "linear"):
        h = h.flatten(1)
    return h


def before_layer(spec: BackboneSpec, index: int, h: torch.Tensor) -> torch.Tensor:
    """The raw input as the first hidden layer takes it: flat for a fully connected layer, in
    channels-last memory for a convolution (it then writes a channels-last map, the layout the
    pooling needs, instead of one `pool_after` copies; ~10-20% of a CPU training step)."""
    if index > 0:
        return h
    if spec.layers[0].kind == "linear":
        return h.flatten(1)
    return channels_last(h)


def channels_last(h: torch.Tensor) -> torch.Tensor:
    """An image batch in channels-last memory. A one-channel batch is the same memory in either
    layout, but a convolution reads its layout from the strides, so those are set."""
    if h.shape[1] > 1:
        return h.contiguous(memory_format=torch.channels_last)
    _, _, height, width = h.shape
    return h.contiguous().as_strided(h.shape, (height * width, 1, width, 1))


class FeatureNet(nn.Module):
    """The hidden layers of a spec: input -> features of the last hidden layer."""

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        self.spec = spec
        self.preprocess = Preprocess(spec.mean, spec.std)
        self.layers = nn.ModuleList(make_layer(spec, i) for i in range(len(spec.layers)))
        self.out_features = spec.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.preprocess(x)
        for i, layer in enumerate(self.layers):
            h = before_layer(self.spec, i, h)
            h = after_layer(self.spec, i, torch.relu(layer(h)))
        return h


class ResNetFeatures(nn.Module):
    """Avalanche's reduced ResNet-18 (20 base filters) without its classifier; for GPU runs."""

    def __init__(self, in_shape: Sequence[int], mean: float, std: float):
        super().__init__()
        from avalanche.models.slim_resnet18 import BasicBlock, ResNet

        net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=1, nf=20)
        if in_shape[0] != 3:
            net.conv1 = nn.Conv2d(in_shape[0], 20, kernel_size=3, stride=1, padding=1, bias=False)
        net.linear = nn.Identity()
        self.preprocess = Preprocess(mean, std)
        self.net = net
        with torch.no_grad():
            self.out_features = int(net(torch.zeros(1, *in_shape)).shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))


def widened(spec: BackboneSpec, width: float) -> BackboneSpec:
    """`spec` with every hidden layer's width multiplied by `width` (rounded, at least 1): the same
    network made larger or smaller, for rows compared at another method's parameter count."""
    if width == 1:
        return spec
    layers = tuple(replace(layer, width=max(1, round(layer.width * width))) for layer in spec.layers)
    return replace(spec, name=f"{spec.name} x{width:g}", layers=layers)


def build_features(dataset: str, backbone: str | None = None, width: float = 1.0) -> nn.Module:
    """The feature extractor for a dataset (its default backbone unless one is named), its hidden
    layers widened by `width` (spec backbones only)."""
    name = backbone or DEFAULT_BACKBONE[dataset]
    if name == "resnet18":
        if width != 1:
            raise ValueError("a width multiplier applies to spec backbones only, not resnet18")
        spec = BACKBONES[DEFAULT_BACKBONE[dataset]]
        return ResNetFeatures(spec.in_shape, spec.mean, spec.std)
    return FeatureNet(widened(BACKBONES[name], width))


RESNET_INPUT = (3, 32, 32)  # Avalanche's slim ResNet-18 reshapes its input to this


def unusable(dataset: str, backbone: str) -> str | None:
    """Why `backbone` cannot take `dataset`'s images (an unknown name, another input shape), or None."""
    names = [*BACKBONES, "resnet18"]
    if backbone not in names:
        return f"unknown backbone {backbone!r}; valid: {', '.join(names)}"
    images = BACKBONES[DEFAULT_BACKBONE[dataset]].in_shape
    takes = RESNET_INPUT if backbone == "resnet18" else BACKBONES[backbone].in_shape
    if tuple(takes) != tuple(images):
        usable = [n for n in names if (RESNET_INPUT if n == "resnet18" else BACKBONES[n].in_shape) == images]
        return (f"backbone {backbone} takes images of shape {tuple(takes)}, {dataset} has {tuple(images)}; "
                f"for {dataset} use {', '.join(usable)}")
    return None


def backbone_spec(dataset: str, backbone: str | None = None, width: float = 1.0) -> BackboneSpec | None:
    """The layer spec of a backbone (widened by `width`), or None for backbones not built from a
    spec (resnet18)."""
    name = backbone or DEFAULT_BACKBONE[dataset]
    spec = BACKBONES.get(name)
    return widened(spec, width) if spec is not None else None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
