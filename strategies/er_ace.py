"""ER-ACE (Caccia et al. 2022): replay with asymmetric cross-entropy, incoming batch scored over its own classes only.

"New Insights on Reducing Abrupt Representation Change in Online Continual
Learning" (ICLR 2022). Each minibatch of the new task is joined by one of the
same size from the matched class-balanced memory (as `replay`); the incoming
half is trained with cross-entropy over the classes present in that half only,
so new classes do not push down the logits of old ones, and the replayed half
with cross-entropy over every class. The two are averaged (Avalanche's
`ACECriterion`, which this uses). The first task, with an empty memory, is
plain cross-entropy.

Deviations from the paper: the memory is the suite's matched class-balanced
buffer, filled at the end of each task, where the paper fills a reservoir
online; and the protocol's epochs replace the paper's single online pass.
So this is exactly `replay` with the asymmetric loss, which isolates its effect.
Deviation from Avalanche's `ER_ACE` strategy, which is not used: that one reads
its buffer through a per-sample DataLoader and updates it before each task;
the suite's memory works on tensors.
"""
from __future__ import annotations

SCENARIOS = ("class-il",)
MEMORY = "shared"


def unsupported(dataset, scenario, memory, backbone):
    return None if memory > 0 else "er_ace needs a memory budget (--memory > 0)"


class AsymmetricLoss:
    """Replaces the template's loss on joined batches (new half first, memory half second) by ACE.

    Avalanche calls a plugin's hooks by name, so this need not subclass its
    SupervisedPlugin, and the module stays cheap to import.
    """

    def __init__(self):
        from avalanche.training import ACECriterion

        self.ace = ACECriterion()

    def before_backward(self, strategy, **kwargs):
        from bench.memory import ReplayBatches

        # the memory joins a batch exactly when it has wrapped the loader (tasks after the first)
        if not isinstance(strategy.dataloader, ReplayBatches):
            return
        n = len(strategy.mb_y) // 2
        out, y = strategy.mb_output, strategy.mb_y
        strategy.loss = self.ace(out[:n], y[:n], out[n:], y[n:])


def build(ctx):
    return ctx.template(plugins=[AsymmetricLoss()])
