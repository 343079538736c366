"""Naive fine-tuning on each task in turn: the lower bound, nothing protects old tasks."""
SCENARIOS = ("class-il", "task-il")
MEMORY = "none"


def build(ctx):
    return ctx.template(replay=False)
