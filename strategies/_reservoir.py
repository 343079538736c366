"""A reservoir-sampled buffer of (x, y, task[, logits]) tensors, shared by `derpp` and `er_ace` (not a strategy).

The buffer stores each sample's raw image, as the data gives it (`strategy.mb_raw_x`,
before the protocol's augmentation), and `replayed_inputs` augments a drawn minibatch
afresh at every replay, so a stored sample is seen under a new crop and flip each time
it is drawn, as the shared memory's samples are (Mammoth's DER++ and ER-ACE do the same).
"""
from __future__ import annotations

import torch

MASKED = -1000.0  # what Avalanche's heads put in units that are not live


def stored_inputs(strategy) -> torch.Tensor:
    """The current minibatch's inputs as the buffer keeps them: raw, on the CPU."""
    return strategy.mb_raw_x.detach().cpu()


def replayed_inputs(strategy, x: torch.Tensor) -> torch.Tensor:
    """Stored inputs as the network sees them at replay: on the strategy's device and, where the
    protocol augments, through the strategy's own augmentation (`bench.augment.CropFlip`, seeded
    by the cell; the same generator that augments the incoming minibatches)."""
    x = x.to(strategy.device)
    augment = getattr(strategy, "augment", None)  # None: the protocol does not augment
    return augment(x) if augment is not None else x


class Reservoir:
    """At most `size` samples; after k samples were offered, each of them is held with probability size/k.

    With `n_units > 0` every sample keeps a row of logits (DER++); units not given stay MASKED.
    """

    def __init__(self, size: int, seed: int = 0, n_units: int = 0):
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.seen = 0  # samples offered so far
        self.x: torch.Tensor | None = None  # allocated on the first sample: its shape and dtype
        self.y = torch.zeros(size, dtype=torch.long)
        self.t = torch.zeros(size, dtype=torch.long)
        self.logits = torch.full((size, n_units), MASKED)

    def __len__(self) -> int:
        return min(self.seen, self.size)

    def draw(self, n: int) -> torch.Tensor:
        """Indices of n samples drawn uniformly, with replacement."""
        return torch.randint(len(self), (n,), generator=self.generator)

    def add(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, logits: torch.Tensor | None = None) -> None:
        if self.x is None:
            self.x = torch.zeros((self.size, *x.shape[1:]), dtype=x.dtype)
        # sample number k (from 0) takes slot k while the buffer fills, then a uniform slot in [0, k],
        # kept only if that slot exists
        k = self.seen + torch.arange(len(y))
        slots = torch.where(k < self.size, k, (torch.rand(len(y), generator=self.generator) * (k + 1)).long())
        self.seen += len(y)
        for i in torch.nonzero(slots < self.size).flatten().tolist():  # in order: a later sample wins a slot
            slot = int(slots[i])
            self.x[slot], self.y[slot], self.t[slot] = x[i], y[i], t[i]
            if logits is not None:
                self.logits[slot] = MASKED
                self.logits[slot, : logits.shape[1]] = logits[i]
