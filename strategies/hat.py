"""HAT (Serra et al. 2018): hard attention to the task, per-task unit gates learnt with the task, frozen by compensated gradients.

"Overcoming Catastrophic Forgetting with Hard Attention to the Task" (ICML 2018). Every hidden unit
(conv channel or linear unit) of layer l is multiplied, for task t, by the gate
a = sigmoid(s * e[l, t]) of a learnt per-task embedding e. Within each epoch s anneals linearly from
1/smax (first batch) to smax (last batch); at test time s = smax, so gates are nearly binary.
After task t the cumulative attention becomes max(a<=t-1, a_t). Training later tasks:

* gradient compensation: the gradient of weight (i <- j) of layer l is multiplied by
  1 - min(a<t[l, i], a<t[l-1, j]) (1 - a<t[l, i] for the first layer's weights and every bias), so
  units earlier tasks attended to are (nearly) frozen;
* embedding compensation: the embedding's gradient is scaled by
  smax (cosh(s e) + 1) / (s (cosh(e) + 1)), with s e clamped to +-50 as in the authors' code, and
  embeddings are clamped to +-6 after each step;
* attention regularisation: c * sum a_t (1 - a<t) / sum (1 - a<t) over all units is added to the loss,
  so a task takes few units not used before.

The gates multiply each unit after its ReLU, before pooling. One head per task (Task-IL). Gradients
are clipped to norm 10000 (the authors' code). HAT's compensation scales gradients, which Adam's
per-weight normalisation would undo, so the protocols give `hat` plain SGD (lr 0.05, the paper's).
Not from the paper: the spec backbones (no dropout).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bench.settings import Setting

SCENARIOS = ("task-il",)
MEMORY = "none"
SETTINGS = {
    "smax": Setting(400.0, low=1.0, low_open=True, help="the gates' largest slope (s at test time)"),
    "c": Setting(0.75, low=0.0, help="weight of the attention regularisation"),
}
EMBEDDING_CLAMP = 6.0  # the authors' thres_emb
COSH_CLAMP = 50.0  # the authors' thres_cosh
CLIP_NORM = 10000.0


def unsupported(dataset, scenario, memory, backbone):
    from bench.models import backbone_spec

    if backbone_spec(dataset, backbone) is None:
        return f"hat gates the units of a spec backbone's layers; {backbone} is not built from one"
    return None


class HATFeatures(nn.Module):
    """A spec backbone whose hidden units are gated per task; `s` is the gates' slope while training."""

    def __init__(self, spec, n_tasks: int, smax: float):
        super().__init__()
        from bench.models import FeatureNet

        plain = FeatureNet(spec)
        self.spec, self.preprocess, self.layers = spec, plain.preprocess, plain.layers
        self.out_features = plain.out_features
        self.smax, self.s = smax, 1.0 / smax
        # the authors draw embeddings from N(0, 1)
        self.embeddings = nn.ParameterList(nn.Parameter(torch.randn(n_tasks, layer.width)) for layer in spec.layers)
        for i, layer in enumerate(spec.layers):  # units attended to by the tasks so far
            self.register_buffer(f"cumulative{i}", torch.zeros(layer.width))
        self.task = 0
        self.gates: list[torch.Tensor] = []  # of the latest forward pass, for the regulariser

    def cumulative(self) -> list[torch.Tensor]:
        return [getattr(self, f"cumulative{i}") for i in range(len(self.layers))]

    def gate(self, i: int, task: int, s: float) -> torch.Tensor:
        return torch.sigmoid(s * self.embeddings[i][task])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from bench.models import after_layer, before_layer

        s = self.s if self.training else self.smax
        h = self.preprocess(x)
        self.gates = []
        for i, layer in enumerate(self.layers):
            a = self.gate(i, self.task, s)
            self.gates.append(a)
            h = torch.relu(layer(before_layer(self.spec, i, h)))
            h = h * (a.view(1, -1, 1, 1) if h.dim() == 4 else a)
            h = after_layer(self.spec, i, h)
        return h

    def end_task(self, task: int) -> None:
        """Cumulative attention after `task`: the elementwise max with its gates at s = smax."""
        with torch.no_grad():
            for i, cum in enumerate(self.cumulative()):
                torch.maximum(cum, self.gate(i, task, self.smax), out=cum)

    def compensation(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the factors on the gradients of its weight and its bias: 1 - min(a<t of the unit,
        a<t of its input unit) and 1 - a<t of the unit."""
        cum = self.cumulative()
        out = []
        for i, layer in enumerate(self.layers):
            post = cum[i]
            if i == 0:
                pairs = post.view(-1, 1).expand(layer.weight.shape[0], layer.weight.shape[1])
            else:
                pre = cum[i - 1]
                n_in = layer.weight.shape[1]
                pre = pre.repeat_interleave(n_in // pre.numel())  # a conv map flattened channel-major
                pairs = torch.minimum(post.view(-1, 1), pre.view(1, -1))
            shape = (*pairs.shape, *([1] * (layer.weight.dim() - 2)))
            out.append(((1 - pairs).reshape(shape), 1 - post))
        return out

    def regularisation(self) -> torch.Tensor:
        """sum a_t (1 - a<t) / sum (1 - a<t) over every unit (the gates of the latest forward pass)."""
        cum = self.cumulative()
        used = sum(((1 - c) * a).sum() for a, c in zip(self.gates, cum))
        return used / sum((1 - c).sum() for c in cum)


class HATPlugin:
    """The annealing, the compensations, the regulariser and the cumulative attention (an Avalanche
    plugin: hooks called by name)."""

    def __init__(self, c: float):
        self.c = c
        self.factors: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._batch = self._batches = 0

    def before_training_exp(self, strategy, **kwargs):
        feats = strategy.model.features
        feats.task = int(strategy.experience.task_labels[0])
        self.factors = feats.compensation()
        strategy.optimizer.state.clear()  # no momentum carried from the previous task

    def before_training_epoch(self, strategy, **kwargs):
        self._batch, self._batches = 0, len(strategy.dataloader)

    def before_forward(self, strategy, **kwargs):
        feats = strategy.model.features
        progress = self._batch / max(1, self._batches - 1)
        feats.s = 1 / feats.smax + (feats.smax - 1 / feats.smax) * progress
        self._batch += 1

    def before_backward(self, strategy, **kwargs):
        strategy.loss = strategy.loss + self.c * strategy.model.features.regularisation()

    def before_update(self, strategy, **kwargs):
        feats = strategy.model.features
        with torch.no_grad():
            for layer, (weight_factor, bias_factor) in zip(feats.layers, self.factors):
                if layer.weight.grad is not None:
                    layer.weight.grad.mul_(weight_factor)
                    layer.bias.grad.mul_(bias_factor)
            s, smax = feats.s, feats.smax
            for emb in feats.embeddings:
                if emb.grad is not None:
                    e = emb.detach()
                    num = torch.cosh(torch.clamp(s * e, -COSH_CLAMP, COSH_CLAMP)) + 1
                    emb.grad.mul_(smax / s * num / (torch.cosh(e) + 1))
        nn.utils.clip_grad_norm_(strategy.model.parameters(), CLIP_NORM)

    def after_update(self, strategy, **kwargs):
        with torch.no_grad():
            for emb in strategy.model.features.embeddings:
                emb.clamp_(-EMBEDDING_CLAMP, EMBEDDING_CLAMP)

    def after_training_exp(self, strategy, **kwargs):
        strategy.model.features.end_task(strategy.model.features.task)
        self.factors = []  # weight-sized; recomputed from the cumulative attention at the next task


def model_class():
    """A Task-IL network whose gated backbone is told the task before each head's pass."""
    from bench.heads import TaskILNet

    class HATTaskIL(TaskILNet):
        def forward_single_task(self, x, task_label):
            self.features.task = int(task_label)
            return self.classifier.forward_single_task(self.features(x), task_label)

        def forward_all_tasks(self, x):
            return {t: self.forward_single_task(x, t) for t in self.known_train_tasks_labels}

    return HATTaskIL


def build_model(ctx) -> nn.Module:
    return model_class()(HATFeatures(ctx.spec, ctx.split.n_tasks, ctx.params["smax"]))


def build(ctx):
    return ctx.template(plugins=[HATPlugin(ctx.params["c"])], model=build_model(ctx), replay=False)
