"""Elastic weight consolidation (Kirkpatrick et al. 2017), Avalanche's EWCPlugin, plus the matched memory."""
from bench.settings import Setting

SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"
SETTINGS = {"lambda": Setting(5000.0, low=0.0, help="weight of the quadratic penalty")}


def build(ctx):
    from avalanche.training.plugins import EWCPlugin

    return ctx.template(plugins=[EWCPlugin(ewc_lambda=ctx.params["lambda"], mode="separate")])
