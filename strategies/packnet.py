"""PackNet (Mallya & Lazebnik 2018): after each task prune a fraction of its free weights by magnitude, retrain, freeze.

"PackNet: Adding Multiple Tasks to a Single Network by Iterative Pruning" (CVPR 2018). One fixed
network: a task trains the weights no earlier task kept; after its first `epochs - retrain_epochs`
epochs the fraction `prune` of them with the smallest magnitude in each layer is released (hidden
from the task and set to 0), the rest retrain for `retrain_epochs` epochs and are then frozen for
good. At test time task t computes with the weights of tasks 0..t only. One head per task (Task-IL).

Avalanche's `PackNetModel` does the masking (it wraps each conv and linear layer of the spec
backbone: per-weight task index, magnitude ranking, gradient hook on frozen weights, a task's view
of the weights); its biases, as there, train on the first task only. Avalanche's `PackNetPlugin`
and `PackNet` strategy are not used: they need the PackNetModel to be the whole model, which would
prune the heads too and call the backbone without the task label the multi-head model needs, and
they refuse `epochs <= post_prune_epochs` (a 1-epoch cell). Here the schedule is a small plugin
and, with fewer epochs than `retrain_epochs + 1`, the pruning comes after the last epoch (no
retraining). The optimizer's state is cleared at each task's start and at pruning, so Adam's
moments cannot move frozen or released weights (their gradients are zero).
"""
from __future__ import annotations

from bench.settings import Setting

SCENARIOS = ("task-il",)
MEMORY = "none"
SETTINGS = {
    "prune": Setting(0.5, low=0.0, low_open=True, high=1.0,
                     help="fraction of a task's free weights per layer released for later tasks after it"),
    "retrain_epochs": Setting(1, low=0, help="of each task's epochs, those after the pruning"),
}


def unsupported(dataset, scenario, memory, backbone):
    from bench.models import backbone_spec

    if backbone_spec(dataset, backbone) is None:
        return f"packnet wraps the conv and linear layers of a spec backbone; {backbone} is not built from one"
    return None


def model_class():
    """A Task-IL network whose backbone is Avalanche's PackNetModel, asked for each task's weights
    (built on first use: importing Avalanche is slow)."""
    from bench.heads import TaskILNet

    class PackNetTaskIL(TaskILNet):
        def forward_single_task(self, x, task_label):
            # a task not yet frozen (the one in training) sees every weight not released
            self.features.activate_task(min(int(task_label), self.features.task_count))
            return self.classifier.forward_single_task(self.features.wrappee(x), task_label)

        def forward_all_tasks(self, x):
            return {t: self.forward_single_task(x, t) for t in self.known_train_tasks_labels}

    return PackNetTaskIL


class PackNetSchedule:
    """Prunes after `epochs - retrain` epochs of each task (or after the last), freezes after it
    (an Avalanche plugin: hooks called by name)."""

    def __init__(self, prune: float, retrain_epochs: int, epochs: int):
        self.prune = prune
        self.prune_at = max(1, epochs - retrain_epochs)  # epochs trained before the pruning
        self.pruned = False
        # set by build; held so that the cell counts its buffers (each weight's task index and
        # masks, 3 bytes a weight) as the method's extra state
        self.network = None

    def before_training_exp(self, strategy, **kwargs):
        strategy.optimizer.state.clear()
        self.pruned = False

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs == self.prune_at:
            self._prune(strategy)

    def after_training_exp(self, strategy, **kwargs):
        if not self.pruned:
            self._prune(strategy)
        strategy.model.features.freeze_pruned()

    def _prune(self, strategy) -> None:
        import torch

        features = strategy.model.features
        features.activate_task(features.task_count)
        features.prune(self.prune)
        with torch.no_grad():
            for module in _packnet_layers(features):
                module.wrappee.weight[module.pruned_mask] = 0.0  # released weights start the next task at 0
        strategy.optimizer.state.clear()
        self.pruned = True


def _packnet_layers(features):
    from avalanche.models.packnet import WeightAndBiasPackNetModule

    return [m for m in features.modules() if isinstance(m, WeightAndBiasPackNetModule)]


def build_model(ctx):
    from avalanche.models.packnet import PackNetModel

    features = ctx.features()
    wrapped = PackNetModel(features)
    wrapped.out_features = features.out_features  # what the heads are sized by
    return model_class()(wrapped)


def build(ctx):
    model = build_model(ctx)
    schedule = PackNetSchedule(ctx.params["prune"], ctx.params["retrain_epochs"], ctx.epochs)
    schedule.network = model.features
    return ctx.template(plugins=[schedule], model=model, replay=False)
