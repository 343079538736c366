"""ER-ACE (Caccia et al. 2022): replay with asymmetric cross-entropy, incoming batch scored over its own classes only.

"New Insights on Reducing Abrupt Representation Change in Online Continual
Learning" (ICLR 2022). Each incoming minibatch is trained with cross-entropy
over the classes present in it only, so new classes do not push down the
logits of old ones; a minibatch of the same size drawn from the buffer is
trained with cross-entropy over every class. The two are averaged, as Avalanche's
`ACECriterion` does; `asymmetric_loss` computes the same value through a log-softmax,
since `ACECriterion` takes the log of a softmax, which underflows to log(0) and a NaN
loss once two current classes' logits are ~104 apart (Split-MNIST on a 784-1000-1000
MLP, seed 0: step 22 of the first task). The buffer is a reservoir over every sample
seen, updated after each step, as in the paper: it holds the current task's
samples too, which is how new classes learn to beat old ones (the replayed
term is the only one that compares them). At most `ctx.memory` samples.

Augmentation (protocols with `augment = true`): the incoming minibatch is
augmented by the template (`bench/strategy.py`); the buffer stores the raw image
and each replayed minibatch is augmented afresh with the protocol's crop and flip
(`strategies/_reservoir.py`), as the paper's code (Mammoth) does.

Deviations from the paper: the protocol's epochs replace the paper's single
online pass (so a sample can be offered to the reservoir once per epoch). Deviation from Avalanche's `ER_ACE` strategy, which is not
used: Avalanche fills a class-balanced buffer before each experience and reads
it through a per-sample DataLoader; this keeps a reservoir of tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from strategies._reservoir import Reservoir, replayed_inputs, stored_inputs

SCENARIOS = ("class-il",)
MEMORY = "own"


def unsupported(dataset, scenario, memory, backbone):
    return None if memory > 0 else "er_ace needs a memory budget (--memory > 0)"


def asymmetric_loss(out_in: torch.Tensor, y_in: torch.Tensor, out_buffer: torch.Tensor,
                    y_buffer: torch.Tensor) -> torch.Tensor:
    """The mean of cross-entropy on the incoming batch over its own classes and cross-entropy on
    the replayed batch over every class (Avalanche's `ACECriterion`, finite at any logit gap)."""
    current = torch.unique(y_in)  # sorted, so a label's position in it is its column below
    loss_in = F.cross_entropy(out_in[:, current], torch.searchsorted(current, y_in))
    return (F.cross_entropy(out_buffer, y_buffer) + loss_in) / 2


class AsymmetricReplay:
    """The reservoir and the asymmetric loss, as an Avalanche plugin.

    Avalanche calls a plugin's hooks by name, so this need not subclass its
    SupervisedPlugin, and the module stays cheap to import.
    """

    def __init__(self, size: int, seed: int = 0):
        self.buffer = Reservoir(size, seed=seed)

    def exemplars_held(self) -> int:
        return len(self.buffer)

    def before_backward(self, strategy, **kwargs):
        if not len(self.buffer):  # the very first step: plain cross-entropy
            return
        from avalanche.models.utils import avalanche_forward

        idx = self.buffer.draw(len(strategy.mb_y))
        b, device = self.buffer, strategy.device
        replayed = avalanche_forward(strategy.model, replayed_inputs(strategy, b.x[idx]), b.t[idx].to(device))
        # replaces the template's cross-entropy on the incoming batch
        strategy.loss = asymmetric_loss(strategy.mb_output, strategy.mb_y, replayed, b.y[idx].to(device))

    def after_training_iteration(self, strategy, **kwargs):
        y, t = (v.detach().cpu() for v in strategy.mbatch[1:3])
        self.buffer.add(stored_inputs(strategy), y, t)  # the raw image, augmented afresh at each replay


def build(ctx):
    return ctx.template(plugins=[AsymmetricReplay(ctx.memory, seed=ctx.seed)], replay=False)
