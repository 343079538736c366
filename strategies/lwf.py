"""Learning without forgetting (Li & Hoiem 2017), Avalanche's LwFPlugin, plus the matched memory."""
from bench.settings import Setting

SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"
SETTINGS = {"alpha": Setting(1.0, low=0.0, help="weight of the distillation loss"),
            "temperature": Setting(2.0, low=0.0, low_open=True, help="softmax temperature of the distillation")}


def build(ctx):
    from avalanche.training.plugins import LwFPlugin

    return ctx.template(plugins=[LwFPlugin(alpha=ctx.params["alpha"], temperature=ctx.params["temperature"])])
