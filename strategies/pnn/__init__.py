"""Progressive neural networks (Rusu et al. 2016): a new column per task, lateral links from frozen earlier columns.

Avalanche's PNN has MLP columns only; `network.py` builds columns from the
backbone's layer spec, so convolutional backbones get convolutional columns;
a lateral adapter that reads convolutional maps (into a conv layer, or into the
fully connected layer that follows the last conv) projects them with a 1x1
convolution onto one column's channels before any flattening, as Rusu et al. do
(`network.py`, `Adapter`). Columns may be
narrower than the backbone (`width_factor` in the protocol) since a network of T
tasks holds T columns, and each forward pass of the last runs all of them.
"""
from bench.settings import Setting

SCENARIOS = ("task-il",)
MEMORY = "none"
SETTINGS = {"width_factor": Setting(1.0, low=0.0, low_open=True, high=1.0,
                                    help="column width as a fraction of the backbone's")}


def unsupported(dataset, scenario, memory, backbone):
    if backbone == "resnet18":
        return "pnn builds its columns from a layer spec; the resnet18 backbone has none"
    return None


def build(ctx):
    from strategies.pnn.network import ProgressiveNet

    model = ProgressiveNet(ctx.spec, len(ctx.split.task_classes[0]),
                           width_factor=ctx.params["width_factor"])
    return ctx.template(model=model, replay=False)
