"""Elastic weight consolidation (Kirkpatrick et al. 2017), Avalanche's EWCPlugin, plus the matched memory."""
SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"


def build(ctx):
    from avalanche.training.plugins import EWCPlugin

    return ctx.template(plugins=[EWCPlugin(ewc_lambda=ctx.params["lambda"], mode="separate")])
