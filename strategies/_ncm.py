"""Nearest-class-mean prediction on a network's last hidden layer (not a strategy).

The rule IB's Class-IL rows use with `ncm_means = "exemplars"` (strategies/ib/plugin.py): a class's
mean is the average of its samples' features, each sample's features L2-normalised first when
`normalize` (cosine scoring, iCaRL's choice) and the mean normalised again; a sample scores each
class by minus the Euclidean distance from its (normalised) features to the class's mean. Classes
without a mean score below every other. IB's Class-IL rows take their exemplar means from here, and
the channels' spread for the kept means they scale (`pooled_spread`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def space(features: torch.Tensor, normalize: bool) -> torch.Tensor:
    """The features as they are compared: L2-normalised per sample when `normalize`."""
    return nn.functional.normalize(features, dim=1) if normalize else features


def class_means(features: torch.Tensor, y: torch.Tensor, normalize: bool) -> dict[int, torch.Tensor]:
    """Each class's mean of (normalised) features, normalised again when `normalize`."""
    feats = space(features, normalize)
    return {int(c): space(feats[y == c].mean(0)[None], normalize)[0] for c in y.unique().tolist()}


def scores(features: torch.Tensor, means: dict[int, torch.Tensor], normalize: bool) -> torch.Tensor:
    """[batch, classes] minus the distance to each class's mean; classes without one score lowest."""
    n = max(means) + 1
    table = torch.zeros(n, features.shape[1], device=features.device)
    known = torch.zeros(n, dtype=torch.bool, device=features.device)
    for c, mean in means.items():
        table[c], known[c] = mean.to(features.device), True
    out = -torch.cdist(space(features, normalize), table)
    return torch.where(known, out, out.min() - 1.0)


def pooled_spread(features: torch.Tensor, y: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Each channel's standard deviation within the classes of `y`, their variances averaged, on
    `channels` (a bool mask), and 1 elsewhere.

    Pooled over the classes rather than one per class: the classes compared on a channel then share
    one scale (a per-class spread would also favour the widest classes), and a class with few
    samples borrows the others'. Floored at a hundredth of the mean spread on `channels`, so that a
    channel on which the classes hardly vary does not outweigh all the others."""
    var = torch.stack([features[y == c].var(0, unbiased=False) for c in y.unique()]).mean(0)
    spread = var.sqrt()
    if bool(channels.any()):
        spread = spread.clamp(min=max(0.01 * float(spread[channels].mean()), 1e-12))
    return torch.where(channels, spread, torch.ones_like(spread))


def hidden_features(features: nn.Module, x: torch.Tensor, batch_size: int, device: Any = "cpu") -> torch.Tensor:
    """Deterministic last-hidden-layer features of `x` (eval mode), in batches."""
    was_training = features.training
    features.eval()
    with torch.no_grad():
        out = [features(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    features.train(was_training)
    return torch.cat(out)
