"""Experience replay: each task's data trained together with the matched class-balanced memory."""
SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"


def unsupported(dataset, scenario, memory, backbone):
    return None if memory > 0 else "replay needs a memory budget (--memory > 0)"


def build(ctx):
    return ctx.template()
