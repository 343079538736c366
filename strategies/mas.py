"""Memory Aware Synapses (Aljundi et al. 2018), Avalanche's MASPlugin, plus the matched memory.

After each task every weight's importance is the mean absolute gradient of the
squared L2 norm of the network's output over the task's data (no labels
needed); a quadratic penalty weighted by `lambda` keeps important weights near
their values after the task. Importances of successive tasks are blended,
`alpha` x old + (1 - alpha) x new (Avalanche's, after FACIL). Avalanche's
plugin works with the harness as it is: it reads the task's data through its
own DataLoader once per task, which costs about a second on Split-MNIST.
"""
from bench.settings import Setting

SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"
SETTINGS = {
    "lambda": Setting(1.0, low=0.0, help="weight of the quadratic penalty"),
    "alpha": Setting(0.5, low=0.0, high=1.0, help="weight of the old importance when a task's is added"),
}


def build(ctx):
    from avalanche.training.plugins import MASPlugin

    return ctx.template(plugins=[MASPlugin(lambda_reg=ctx.params["lambda"], alpha=ctx.params["alpha"])])
