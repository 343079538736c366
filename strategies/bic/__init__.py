"""BiC (Wu et al. 2019, "Large Scale Incremental Learning"): replay with distillation, then a bias correction of new classes' logits.

Each task trains on new data joined by exemplars (the suite's batching), with the
loss (1 - lam) x cross-entropy + lam x distillation of the old classes' logits
from the network after the previous task (temperature `temperature`; lam = old
classes / classes seen). After each task from the second, a two-parameter layer
(alpha x logit + beta on the new classes' logits; Avalanche's BiasLayer) is fitted
on a small class-balanced validation set with the network frozen, and corrects
every later prediction and the old network's distillation targets.

The one budget: `ctx.memory` exemplars in all, `val_fraction` of them validation
samples (held out of training when their task arrives) and the rest training
exemplars; each part class-balanced (bench/memory.py's store).

Not Avalanche's BiCPlugin (its bias step, BiasLayer and the paper's rules are
followed): it keeps `mem_size` training exemplars plus a validation buffer of
`val_percentage x mem_size` on top (over the budget), reads both through
per-sample loaders, and its distillation takes the teacher's softmax over the
batch (dim 0) instead of over classes, at a temperature fixed at 2 whatever `T`
says; tests/test_new_methods.py checks the last point upstream, so an Avalanche
upgrade that fixes it is noticed.
"""
from bench.settings import Setting

SCENARIOS = ("class-il",)
MEMORY = "own"
SETTINGS = {
    "val_fraction": Setting(0.1, low=0.0, low_open=True, high=0.5,
                            help="share of the budget kept as validation samples for the bias layer"),
    "temperature": Setting(2.0, low=0.0, low_open=True, help="softmax temperature of the distillation"),
    "bias_epochs": Setting(200, low=1, help="epochs of the bias layer's training on the validation samples"),
    "bias_lr": Setting(0.1, low=0.0, low_open=True, help="learning rate of the bias layer (SGD, momentum 0.9)"),
}


def unsupported(dataset, scenario, memory, backbone):
    return None if memory > 0 else "bic keeps exemplars and validation samples and needs a memory budget (--memory > 0)"


def build(ctx):
    from strategies.bic.plugin import BiasCorrection

    plugin = BiasCorrection(ctx.memory, val_fraction=ctx.params["val_fraction"],
                            temperature=ctx.params["temperature"], bias_epochs=ctx.params["bias_epochs"],
                            bias_lr=ctx.params["bias_lr"], seed=ctx.seed)
    return ctx.template(plugins=[plugin], replay=False)
