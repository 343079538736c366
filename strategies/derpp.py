"""DER++ (Buzzega et al. 2020, "Dark Experience for General Continual Learning"): replay of stored logits and labels.

Every incoming minibatch is trained with cross-entropy; two minibatches drawn
from the buffer add `alpha` times the squared distance between the network's
logits and the logits stored with those samples, and `beta` times the
cross-entropy on their labels. The buffer is filled by reservoir sampling during
training and each sample keeps the logits the network gave it in the training
pass that saw it, as in the paper (Algorithm 1).

The buffer holds at most `ctx.memory` samples (the suite's budget counts images);
their logits are extra state and show in the record's `extra_state_bytes`.

Augmentation (protocols with `augment = true`, the CIFAR ones): the incoming
minibatch is augmented by the template (`bench/strategy.py`) and its logits come
from that augmented pass; the buffer stores the raw image with them, and each
replayed minibatch is augmented afresh with the protocol's crop and flip
(`strategies/_reservoir.py`), as in the paper's code (Mammoth).

Deviations from the paper:
- The paper's Split-CIFAR-10 figure (64.9% Class-IL @200) uses 50 epochs and
  SGD; the suite uses each protocol's optimizer and epochs.
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
from strategies._reservoir import MASKED, Reservoir, replayed_inputs, stored_inputs

SCENARIOS = ("class-il", "task-il")
MEMORY = "own"
SETTINGS = {"alpha": Setting(0.3, low=0.0, help="weight of the logit-matching (MSE) term"),
            "beta": Setting(0.5, low=0.0, help="weight of the cross-entropy on replayed labels")}


def unsupported(dataset, scenario, memory, backbone):
    return None if memory > 0 else "derpp needs a memory budget (--memory > 0)"


class DerPlusPlus:
    """The reservoir of (x, y, task, logits) and the two replay terms, as an Avalanche plugin.

    Avalanche calls a plugin's hooks by name, so this need not subclass its
    SupervisedPlugin, and the module stays cheap to import.
    """

    def __init__(self, size: int, n_units: int, alpha: float, beta: float, seed: int = 0):
        self.buffer = Reservoir(size, seed=seed, n_units=n_units)
        self.alpha, self.beta = alpha, beta
        self.last_terms: dict[str, float] = {}

    def exemplars_held(self) -> int:
        return len(self.buffer)

    def _replayed(self, strategy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A minibatch of the buffer: the network's outputs, the stored labels and logits."""
        from avalanche.models.utils import avalanche_forward

        idx = self.buffer.draw(len(strategy.mb_y))
        b = self.buffer
        out = avalanche_forward(strategy.model, replayed_inputs(strategy, b.x[idx]), b.t[idx].to(strategy.device))
        return out, b.y[idx].to(strategy.device), b.logits[idx, : out.shape[1]].to(strategy.device)

    def before_backward(self, strategy, **kwargs):
        if not len(self.buffer):
            return
        out, _, stored = self._replayed(strategy)
        live = stored > MASKED / 2  # units that were real when the logits were stored
        mse = ((out - stored) ** 2)[live].mean() if live.any() else out.sum() * 0
        out, y, _ = self._replayed(strategy)  # a second, independent draw for the label term
        ce = F.cross_entropy(out, y)
        strategy.loss = strategy.loss + self.alpha * mse + self.beta * ce
        self.last_terms = {"mse": mse.item(), "ce": ce.item()}

    def after_training_iteration(self, strategy, **kwargs):
        # the raw image, with the logits of the (augmented) pass that trained on it, before this
        # step's update (the paper's)
        y, t = (v.detach().cpu() for v in strategy.mbatch[1:3])
        self.buffer.add(stored_inputs(strategy), y, t, strategy.mb_output.detach().cpu())

def build(ctx):
    plugin = DerPlusPlus(ctx.memory, ctx.split.n_classes, ctx.params["alpha"], ctx.params["beta"], seed=ctx.seed)
    return ctx.template(plugins=[plugin], replay=False)
