"""Joint training on every task at once (Avalanche's JointTraining): the upper bound."""
SCENARIOS = ("class-il", "task-il")
MEMORY = "none"
WHOLE_STREAM = True


def build(ctx):
    from avalanche.training.supervised import JointTraining

    return ctx.template(cls=JointTraining, replay=False)
