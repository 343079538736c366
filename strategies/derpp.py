"""DER++ (Buzzega et al. 2020, "Dark Experience for General Continual Learning"): replay of stored logits and labels.

Every incoming minibatch is trained with cross-entropy; two minibatches drawn
from the buffer add `alpha` times the squared distance between the network's
logits and the logits stored with those samples, and `beta` times the
cross-entropy on their labels. The buffer is filled by reservoir sampling during
training and each sample keeps the logits the network gave it in the training
pass that saw it, as in the paper (Algorithm 1).

The buffer holds at most `ctx.memory` samples (the suite's budget counts images);
their logits are extra state and show in the record's `extra_state_bytes`.

Deviations from the paper:
- No data augmentation (none of the suite's methods augments); the paper's
  Split-CIFAR-10 figure (64.9% Class-IL @200) uses random crops and flips, 50
  epochs and SGD, the suite uses each protocol's optimizer and epochs.
- The suite's Class-IL head grows and masks the units of classes not seen yet
  (Avalanche's IncrementalClassifier), where the paper's head has every class
  from the start. So the logit term compares only the units that were live when
  the logits were stored; in Task-IL likewise only the units of the sample's
  own task head.
Deviations from Avalanche's `DER` strategy, which is not used:
- Avalanche fills a class-balanced buffer at the end of each experience with
  logits of the final network, which is not the paper's reservoir with logits
  taken online; and its buffer is read through a per-sample DataLoader, which
  the suite's tensor loading avoids. This plugin keeps the buffer as tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.settings import Setting

SCENARIOS = ("class-il", "task-il")
MEMORY = "own"
SETTINGS = {"alpha": Setting(0.3, low=0.0, help="weight of the logit-matching (MSE) term"),
            "beta": Setting(0.5, low=0.0, help="weight of the cross-entropy on replayed labels")}

MASKED = -1000.0  # what Avalanche's heads put in units that are not live


def unsupported(dataset, scenario, memory, backbone):
    return None if memory > 0 else "derpp needs a memory budget (--memory > 0)"


class DerPlusPlus:
    """The reservoir buffer of (x, y, task, logits) and the two replay terms, as an Avalanche plugin.

    Avalanche calls a plugin's hooks by name, so this need not subclass its
    SupervisedPlugin, and the module stays cheap to import.
    """

    def __init__(self, size: int, n_units: int, alpha: float, beta: float, seed: int = 0):
        self.size, self.n_units, self.alpha, self.beta = size, n_units, alpha, beta
        self.generator = torch.Generator().manual_seed(seed)
        self.seen = 0  # samples offered to the reservoir so far
        self.x: torch.Tensor | None = None
        self.y = torch.zeros(size, dtype=torch.long)
        self.t = torch.zeros(size, dtype=torch.long)
        self.logits = torch.full((size, n_units), MASKED)
        self.last_terms: dict[str, float] = {}

    def exemplars_held(self) -> int:
        return min(self.seen, self.size)

    def _draw(self, n: int) -> torch.Tensor:
        return torch.randint(self.exemplars_held(), (n,), generator=self.generator)

    def before_backward(self, strategy, **kwargs):
        if self.exemplars_held() == 0:
            return
        from avalanche.models.utils import avalanche_forward

        n = len(strategy.mb_y)
        idx = self._draw(n)
        out = avalanche_forward(strategy.model, self.x[idx].to(strategy.device), self.t[idx].to(strategy.device))
        stored = self.logits[idx, : out.shape[1]].to(strategy.device)
        live = stored > MASKED / 2  # units that were real when the logits were stored
        mse = ((out - stored) ** 2)[live].mean() if live.any() else out.sum() * 0
        idx = self._draw(n)
        out = avalanche_forward(strategy.model, self.x[idx].to(strategy.device), self.t[idx].to(strategy.device))
        ce = F.cross_entropy(out, self.y[idx].to(strategy.device))
        strategy.loss = strategy.loss + self.alpha * mse + self.beta * ce
        self.last_terms = {"mse": mse.item(), "ce": ce.item()}

    def after_training_iteration(self, strategy, **kwargs):
        x, y, t = (v.detach().cpu() for v in strategy.mbatch[:3])
        logits = strategy.mb_output.detach().cpu()
        if self.x is None:
            self.x = torch.zeros((self.size, *x.shape[1:]), dtype=x.dtype)
        # reservoir sampling: sample number k (from 0) goes to slot k while the buffer fills, then to a
        # uniform slot in [0, k], kept only if that slot exists, so every sample seen so far is held
        # with the same probability
        k = self.seen + torch.arange(len(y))
        slots = torch.where(k < self.size, k, (torch.rand(len(y), generator=self.generator) * (k + 1)).long())
        self.seen += len(y)
        for i in torch.nonzero(slots < self.size).flatten().tolist():  # in order: a later sample wins a slot
            slot = int(slots[i])
            self.x[slot], self.y[slot], self.t[slot] = x[i], y[i], t[i]
            self.logits[slot] = MASKED
            self.logits[slot, : logits.shape[1]] = logits[i]


def build(ctx):
    plugin = DerPlusPlus(ctx.memory, ctx.split.n_classes, ctx.params["alpha"], ctx.params["beta"], seed=ctx.seed)
    return ctx.template(plugins=[plugin], replay=False)
