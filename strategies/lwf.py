"""Learning without forgetting (Li & Hoiem 2017), Avalanche's LwFPlugin, plus the matched memory."""
SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"


def build(ctx):
    from avalanche.training.plugins import LwFPlugin

    return ctx.template(plugins=[LwFPlugin(alpha=ctx.params["alpha"], temperature=ctx.params["temperature"])])
