"""The diagonal empirical Fisher of a set of parameters, shared by `supportnet` and `pnc` (not a strategy)."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F


def empirical_fisher(logits_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     params: Sequence[torch.Tensor], batches: Iterable[Sequence[torch.Tensor]],
                     device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Mean over minibatches of the squared gradient of the cross-entropy on the true labels.

    Squaring minibatch gradients rather than per-sample ones is the usual cheap
    approximation (Avalanche's EWCPlugin does the same); `logits_of(x, task)`
    gives the network's output for a batch.
    """
    fisher = [torch.zeros_like(p) for p in params]
    n = 0
    for x, y, t, *_ in batches:
        x, y, t = x.to(device), y.to(device), t.to(device)
        grads = torch.autograd.grad(F.cross_entropy(logits_of(x, t), y), params, allow_unused=True)
        for f, g in zip(fisher, grads):
            if g is not None:
                f += g.detach() ** 2
        n += 1
    return [f / max(n, 1) for f in fisher]


def penalty(params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor],
            fisher: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum F (theta - theta*)^2 over every parameter (no 1/2; the weight absorbs it)."""
    return sum(((p - a) ** 2 * f).sum() for p, a, f in zip(params, anchors, fisher))
