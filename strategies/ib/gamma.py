"""Adaptive per-channel gamma (reference section III (a)): drive each layer to a preset number of active channels.

The sparsity term is ``sum_{l,c} gamma_c^l * log(1 + (mu_c^l / sigma_c^l)^2)``. Every ``every`` optimizer
steps the free (not frozen) channels of each layer are ranked by |mu/sigma|; the top ``keep[l]`` *should stay*,
the rest *should go*. A channel is *there* when (mu/sigma)^2 >= threshold. Then per channel:

* should go, still there  -> gamma *= up
* should go, gone         -> unchanged
* should stay, there      -> gamma *= down
* should stay, gone       -> revive: gamma = floor, sigma = its initial value
* gamma clamped to [floor, ceiling]

Frozen channels (active for earlier tasks) carry no penalty and are never adapted.

Constants (defaults below) and where they depart from the reference's 1e-10 start, x1.1 / x0.9,
every 10 steps, bounds [1e-10, 1e-3], and why: a Split-MNIST task at batch 128 has ~94 steps per epoch.
From 1e-10 at x1.1 every 10 steps gamma needs ~1,450 steps to reach the 1e-4 that sparsifies at all
(1.1^145 ~ 1e6: 145 adaptations of 10 steps), over 15 epochs of such a task, so it never converges
within one. Here gamma starts at 1e-4 (where the fixed gamma begins to act), is adapted every step,
x1.25 up / x0.8 down (1e-4 -> 1e-2 in ~21 steps), floor 1e-6 and ceiling 0.1: under Adam a gate
moves ~gate_lr per step once the penalty's gradient outweighs the loss's, and 1e-3 is not always
enough for that on MNIST's 400-wide layers within one epoch.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

# the defaults of the IB settings gamma_start, gamma_up, gamma_down, gamma_min, gamma_max, adapt_every
DEFAULTS = {"start": 1e-4, "up": 1.25, "down": 0.8, "floor": 1e-6, "ceiling": 0.1, "every": 1}


class AdaptiveGamma:
    """Per-channel gamma for a list of `GatedLayer`s (mu, log_sigma, frozen, sigma_init).

    keep[i]: how many of layer i's free channels should end up active (clipped to the free count).
    Build one per task (after the free channels are re-initialised); call `penalty()` in the loss
    and `step()` once per optimizer step.
    """

    def __init__(self, layers: Sequence, keep: Sequence[int], *, threshold: float = 1.0,
                 start: float = DEFAULTS["start"], up: float = DEFAULTS["up"], down: float = DEFAULTS["down"],
                 floor: float = DEFAULTS["floor"], ceiling: float = DEFAULTS["ceiling"],
                 every: int = DEFAULTS["every"]):
        if len(keep) != len(layers):
            raise ValueError(f"keep has {len(keep)} entries for {len(layers)} layers")
        self.layers = list(layers)
        self.keep = [int(k) for k in keep]
        self.threshold, self.up, self.down = threshold, up, down
        self.floor, self.ceiling, self.every = floor, ceiling, every
        self.steps = 0
        self.revived = 0  # channels revived so far (for reports and tests)
        self.gamma = [torch.where(g.frozen, torch.zeros_like(g.mu), torch.full_like(g.mu, start)).detach()
                      for g in self.layers]

    def penalty(self) -> torch.Tensor:
        """sum over layers and channels of gamma_c * log(1 + (mu/sigma)^2) (frozen channels: gamma 0)."""
        return sum((gam * g.information()).sum() for gam, g in zip(self.gamma, self.layers))

    def step(self) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            self.adapt()

    @torch.no_grad()
    def adapt(self) -> None:
        for gated, gam, keep in zip(self.layers, self.gamma, self.keep):
            free = ~gated.frozen
            if not bool(free.any()):
                continue
            ratio = (gated.mu / gated.log_sigma.exp()).abs()
            order = torch.argsort(torch.where(free, ratio, torch.full_like(ratio, -1.0)), descending=True)
            stay = torch.zeros_like(free)
            stay[order[:min(keep, int(free.sum()))]] = True
            there = ratio ** 2 >= self.threshold
            revive = free & stay & ~there
            gam[free & ~stay & there] *= self.up
            gam[free & stay & there] *= self.down
            gam[revive] = self.floor
            gated.log_sigma[revive] = math.log(gated.sigma_init)
            self.revived += int(revive.sum())
            gam[free] = gam[free].clamp(self.floor, self.ceiling)
