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


def per_sample_fisher(model: torch.nn.Module, batches: Iterable[Sequence[torch.Tensor]],
                      device: str | torch.device = "cpu", chunk: int = 32) -> dict[str, torch.Tensor]:
    """Mean over samples of the squared gradient of each sample's own cross-entropy on its true label.

    This is the empirical Fisher of Kirkpatrick et al. (2017). Sample i's loss
    depends on sample i only, so its gradient is the gradient of the per-sample
    losses against the unit vector e_i; autograd takes `chunk` of them in one
    vectorised backward pass (`is_grads_batched`) after one batched forward, so
    any model runs as it trains (task-routed heads, channels-last convolutions,
    which `torch.func.vmap` of the forward cannot take). Returns a tensor per
    named parameter; parameters no sample reaches get zeros.
    """
    from avalanche.models.utils import avalanche_forward

    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    n = 0
    for x, y, t, *_ in batches:
        x, y, t = x.to(device), y.to(device), t.to(device)
        for start in range(0, len(y), chunk):
            rows = slice(start, start + chunk)
            losses = F.cross_entropy(avalanche_forward(model, x[rows], t[rows]), y[rows], reduction="none")
            units = torch.eye(len(losses), device=losses.device)
            grads = torch.autograd.grad(losses, params, grad_outputs=units, is_grads_batched=True,
                                        allow_unused=True)
            for (name, _), g in zip(named, grads):
                if g is not None:
                    fisher[name] += (g.detach() ** 2).sum(0)
        n += len(y)
    return {name: f / max(n, 1) for name, f in fisher.items()}


def minibatch_fisher(model: torch.nn.Module, batches: Iterable[Sequence[torch.Tensor]],
                     device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """`empirical_fisher`'s estimate per named parameter of a model: the squared gradient of each
    minibatch's mean cross-entropy, averaged over minibatches (Avalanche's EWCPlugin's estimate)."""
    from avalanche.models.utils import avalanche_forward

    names = [name for name, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    fisher = empirical_fisher(lambda x, t: avalanche_forward(model, x, t), params, batches, device)
    return dict(zip(names, fisher))
