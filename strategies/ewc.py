"""Elastic weight consolidation (Kirkpatrick et al. 2017), Avalanche's EWCPlugin, plus the matched memory.

Why the penalty weights look large: Avalanche estimates each weight's importance
as the square of the gradient of the *minibatch-mean* loss, averaged over
minibatches, not as the mean of squared per-sample gradients (the empirical
Fisher of the paper). Averaging B per-sample gradients before squaring keeps
their common part but divides their noise part by B, so the importances come
out up to B times smaller: on Split-MNIST at batch 128 about 77x smaller
(measured for issue 8). A lambda of 5e5 here is therefore of the order of 5e3
in the paper's units, and the protocols search 1e2..1e7.
"""
from bench.settings import Setting

SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"
SETTINGS = {
    "lambda": Setting(5000.0, low=0.0, help="weight of the quadratic penalty (Avalanche's Fisher scale)"),
    "mode": Setting("separate", choices=("separate", "online"),
                    help="separate: one penalty per past task; online: one running Fisher (long streams)"),
    "decay_factor": Setting(0.9, low=0.0, high=1.0,
                            help="online mode: weight of the old Fisher when a task's is added"),
}


def build(ctx):
    from avalanche.training.plugins import EWCPlugin

    online = ctx.params["mode"] == "online"
    # Avalanche refuses a decay factor in separate mode, so it is passed only where it applies.
    plugin = EWCPlugin(ewc_lambda=ctx.params["lambda"], mode=ctx.params["mode"],
                       decay_factor=ctx.params["decay_factor"] if online else None)
    return ctx.template(plugins=[plugin])
