"""Elastic weight consolidation (Kirkpatrick et al. 2017), one quadratic penalty per parameter, plus the matched memory.

After each task the plugin estimates a diagonal Fisher F_k of that task's data
at the trained weights theta_k. Separate mode penalises sum_k F_k (theta - theta_k)^2,
one term per past task, as Avalanche's EWCPlugin does by looping over them (O(tasks)
time per step and memory: on Omniglot's 50 tasks 7.7x naive's CPU time). The sum
folds exactly into one quadratic,

    sum_k F_k (theta - theta_k)^2 = S (theta - theta_bar)^2 + c,
    S = sum_k F_k,  theta_bar = sum_k F_k theta_k / S,  c = a constant,

so the plugin keeps S and theta_bar only (and c, a scalar, so the penalty's value
is the sum's too): the same gradients at O(1) cost and memory whatever the number
of tasks (tests/test_ewc.py checks them against Avalanche's plugin). Online mode
(Schwarz et al. 2018) keeps S <- decay_factor * S + F_k and theta_bar <- theta_k,
Avalanche's online rule. Parameters that appear later (a new task head) count from
the task they appear in; a head that grows is padded with zeros, as Avalanche does.

The Fisher (`fisher` setting):
- `minibatch` (Avalanche's estimate): the square of the gradient of the
  *minibatch-mean* loss, averaged over minibatches. Averaging B per-sample
  gradients before squaring keeps their common part but divides their noise
  part by B, so the importances come out up to B times smaller than the
  per-sample ones: on Split-MNIST at batch 128 about 77x smaller (measured for
  issue 8), on Omniglot alphabet 1 about 7x (15.7 against 104.6, issue 26).
  A lambda of 5e5 here is therefore of the order of 5e3 in the paper's units,
  and the protocols search 1e2..1e7.
- `per_sample`: the mean over samples of each sample's squared gradient, the
  empirical Fisher of the paper; its lambdas are on the paper's scale.
Both are taken on the task's training data as read (no augmentation), in eval
mode, at the protocol's training batch size, after the task's training.
"""
from __future__ import annotations

import torch

from bench.settings import Setting

SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"
SETTINGS = {
    "lambda": Setting(5000.0, low=0.0, help="weight of the quadratic penalty (on the `fisher` estimate's scale)"),
    "mode": Setting("separate", choices=("separate", "online"),
                    help="separate: every past task's penalty (kept folded into one); online: a decayed running Fisher"),
    "decay_factor": Setting(0.9, low=0.0, high=1.0,
                            help="online mode: weight of the old Fisher when a task's is added"),
    "fisher": Setting("minibatch", choices=("minibatch", "per_sample"),
                      help="minibatch: squared minibatch-mean gradients (Avalanche's); per_sample: the paper's"),
}


def _grown(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """`t` zero-padded to `shape` (a head that gained units since it was stored)."""
    if t.shape == shape:
        return t
    out = t.new_zeros(shape)
    out[tuple(slice(n) for n in t.shape)] = t
    return out


class FoldedEWC:
    """EWC's penalty kept as one quadratic per parameter, as an Avalanche plugin.

    Avalanche calls a plugin's hooks by name, so this need not subclass its
    SupervisedPlugin, and the module stays cheap to import.
    """

    def __init__(self, lam: float, mode: str = "separate", decay_factor: float = 0.9,
                 fisher: str = "minibatch", batch_size: int = 128):
        self.lam, self.mode, self.decay, self.fisher, self.batch_size = lam, mode, decay_factor, fisher, batch_size
        self.importance: dict[str, torch.Tensor] = {}  # S: summed (or decayed) Fisher
        self.anchor: dict[str, torch.Tensor] = {}  # theta_bar: the Fisher-weighted mean of the anchors
        self.offset = 0.0  # c: what the folded form drops from the sum of the separate penalties
        self._penalised: tuple[list, list, list] | None = None  # _terms of the task in training

    def before_training_exp(self, strategy, **kwargs):
        self._penalised = None  # after Avalanche's model adaptation: heads may be new or grown

    def _terms(self, model: torch.nn.Module) -> tuple[list, list, list]:
        """(parameters, S, theta_bar) of the parameters with a penalty; new ones (a head added since
        the last task) have none yet. Gathered once per task: the model changes only between tasks."""
        if self._penalised is None:
            self._penalised = self._gather(model)
        return self._penalised

    def _gather(self, model: torch.nn.Module) -> tuple[list, list, list]:
        params, importance, anchor = [], [], []
        for name, p in model.named_parameters():
            if name not in self.importance:
                continue
            if self.importance[name].shape != p.shape:  # pad once, not every step
                self.importance[name] = _grown(self.importance[name], p.shape)
                self.anchor[name] = _grown(self.anchor[name], p.shape)
            params.append(p)
            importance.append(self.importance[name])
            anchor.append(self.anchor[name])
        return params, importance, anchor

    @torch.no_grad()
    def add_gradient(self, model: torch.nn.Module) -> torch.Tensor:
        """Add the penalty's gradient, 2 lambda S (theta - theta_bar), to every penalised parameter's;
        returns the penalty's value, sum S (theta - theta_bar)^2 + c: the sum of the separate penalties.

        Computed in a few multi-tensor operations rather than through autograd: a model with many
        heads (Omniglot's 50) has ~100 parameter tensors, and an autograd graph over each cost a
        third of naive's whole training step. A parameter the loss left without a gradient (an
        old task's head) gets this term alone, as autograd would give it."""
        params, importance, anchor = self._terms(model)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        diffs = torch._foreach_sub(params, anchor)
        weighted = torch._foreach_mul(diffs, importance)
        torch._foreach_add_([p.grad for p in params], weighted, alpha=2.0 * self.lam)
        return _dot(diffs, weighted) + self.offset

    def after_backward(self, strategy, **kwargs):
        # after the loss's backward: the penalty's gradient joins it, and its value the logged loss
        if self.importance:
            strategy.loss = strategy.loss + self.lam * self.add_gradient(strategy.model)

    def after_training_exp(self, strategy, **kwargs):
        from bench.batches import TensorBatches, materialize
        from strategies._fisher import minibatch_fisher, per_sample_fisher

        model = strategy.model
        batches = TensorBatches(materialize(strategy.experience.dataset.eval()), self.batch_size, shuffle=False)
        was_training = model.training
        model.eval()
        estimate = per_sample_fisher if self.fisher == "per_sample" else minibatch_fisher
        fisher = estimate(model, batches, strategy.device)
        model.train(was_training)
        self.add_task(fisher, {name: p.detach().clone() for name, p in model.named_parameters()})

    @torch.no_grad()
    def add_task(self, fisher: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> None:
        """Fold one task's Fisher and trained weights into the quadratic."""
        self._penalised = None
        for name, f in fisher.items():
            theta = weights[name]
            if name not in self.importance:
                self.importance[name], self.anchor[name] = f.clone(), theta.clone()
                continue
            old_s, old_anchor = _grown(self.importance[name], f.shape), _grown(self.anchor[name], f.shape)
            if self.mode == "online":
                self.importance[name], self.anchor[name] = self.decay * old_s + f, theta.clone()
                continue
            s = old_s + f
            safe = torch.where(s > 0, s, torch.ones_like(s))
            self.anchor[name] = torch.where(s > 0, (old_s * old_anchor + f * theta) / safe, theta)
            self.importance[name] = s
            # S_old (a - ta)^2 + F (theta - ta)^2 - S (theta - theta_bar)^2 = S_old F / S (a_old - theta_k)^2
            self.offset += float((old_s * f / safe * (old_anchor - theta) ** 2).sum())
        if self.mode == "online":
            self.offset = 0.0


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """sum_i <a_i, b_i> over two lists of tensors of matching shapes (0 for empty lists)."""
    return sum((torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(a, b)), torch.zeros(()))


def build(ctx):
    plugin = FoldedEWC(ctx.params["lambda"], ctx.params["mode"], ctx.params["decay_factor"],
                       ctx.params["fisher"], batch_size=ctx.batch_size)
    return ctx.template(plugins=[plugin])
