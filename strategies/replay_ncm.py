"""Replay with nearest-class-mean prediction: the shared memory, predicting by IB's class-mean rule.

The control for IB's Class-IL classifier (issue 30): plain `replay` (the matched class-balanced
memory, the linear head trained with cross-entropy), but at test time a sample goes to the class
whose mean feature on the last hidden layer is nearest, as IB predicts with `ncm_means =
"exemplars"`: after each task every class's mean is recomputed from the task's data and the memory
(as updated after the task), and `normalize` compares L2-normalised features (cosine), as IB's
`ncm_normalize`; each protocol sets it to IB's value in that table. The head only trains the features.
"""
from __future__ import annotations

from bench.settings import Setting

SCENARIOS = ("class-il",)
MEMORY = "shared"
SETTINGS = {"normalize": Setting(False, help="class means of L2-normalised features (cosine scoring), "
                                              "as IB's ncm_normalize")}


def unsupported(dataset, scenario, memory, backbone):
    return None if memory > 0 else "replay_ncm needs a memory budget (--memory > 0)"


class NearestMean:
    """After training, class means from the task's data and the memory; at evaluation, predictions
    by the nearest mean (an Avalanche plugin: hooks called by name)."""

    def __init__(self, normalize: bool):
        self.normalize = normalize
        self.means: dict = {}
        self.memory = None  # the strategy's ClassBalancedReplay, set by build
        self._features = None  # the last hidden layer's output of the evaluation batch in hand
        self._hook = None

    def before_training(self, strategy, **kwargs):
        if self._hook is None:  # read the features the evaluation's forward pass computes anyway
            self._hook = strategy.model.features.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        if not module.training:
            self._features = output

    def after_training(self, strategy, **kwargs):
        # after every plugin's after_training_exp: the memory holds this task's exemplars already
        import torch

        from bench.strategy import materialize
        from strategies import _ncm

        x, y = materialize(strategy.experience.dataset.eval())[:2]
        if self.memory is not None and len(self.memory):
            stored = self.memory.tensors()
            x, y = torch.cat([x, stored[0]]), torch.cat([y, stored[1]])
        feats = _ncm.hidden_features(strategy.model.features, x, strategy.eval_mb_size, strategy.device)
        self.means.update(_ncm.class_means(feats, y.to(feats.device), self.normalize))

    def after_eval_forward(self, strategy, **kwargs):
        from strategies import _ncm

        if self.means:
            strategy.mb_output = _ncm.scores(self._features, self.means, self.normalize)
        self._features = None


def build(ctx):
    from bench.memory import ClassBalancedReplay

    plugin = NearestMean(ctx.params["normalize"])
    strategy = ctx.template(plugins=[plugin])
    plugin.memory = next((p for p in strategy.plugins if isinstance(p, ClassBalancedReplay)), None)
    return strategy
