"""IB sparse networks: Gaussian information-bottleneck gates pick few channels per task, which are then frozen.

The method (reference sections II (a), II (b), I (c.1), I (c.2), III (a)):

* **Gate.** Each hidden channel c of layer l multiplies its post-ReLU output by
  ``mu_c + sigma_c * eps`` (eps ~ N(0, 1) per sample, and per position in conv
  maps) while training; at test time the gate is the deterministic ``mu_c`` for
  channels with ``(mu_c / sigma_c)^2 >= threshold`` and 0 for the others.
  sigma is stored as ``log_sigma`` so it stays positive.
* **Sparsity.** Loss = cross-entropy + gamma * sum_{l,c} log(1 + (mu/sigma)^2).
  With ``target_active`` set, gamma is per channel and adapted every
  ``adapt_every`` iterations (III (a)): sort |mu/sigma|, split at the target
  kept fraction, then per channel x1.1 (should go, not yet gone), reset to
  gamma_min and sigma to its initial value (should stay, already gone), x0.9
  (should stay, still there), unchanged (should go, gone), clamped to
  [gamma_min, gamma_max].
* **Freezing.** After a task, the channels with ratio^2 >= threshold are active
  for good: their incoming weights from active channels, their bias and gate
  are frozen bit-exactly (restored after every optimizer step, so momentum,
  weight decay and Adam cannot move them), their weights from inactive channels
  are set to 0 and kept 0. Inactive channels are re-initialised (weights, bias,
  gate) at the start of the next task and trained on it.
* **Growth.** A hidden layer whose channels are all active after a task gets
  ``grow`` new inactive channels; the next layer (or the heads) gets the matching
  zero input weights.
* **Heads.** Task-IL: one head per task reading only the channels active for its
  task (weights from later channels are 0); old heads are frozen. Class-IL: one
  trainable output layer used only for the training loss; prediction is by the
  nearest class mean of the last hidden layer's features, recomputed after each
  task from the task's data and the stored exemplars.

Choices and deviations from the reference (why):

* Channels frozen by earlier tasks run with their deterministic test-time gate
  (``mu``, no noise) while later tasks train. Their parameters cannot change, so
  noise on them would only regularise parameters that no longer learn; the new
  channels and heads train on the same old features they will read at test time.
  ``frozen_noise=True`` restores noise on all channels.
* Inactive channels are re-initialised at the *start* of the next task (not at
  the end of theirs), so evaluating right after a task sees the trained model.
* ``target_active`` is the fraction of a layer's *free* channels (not frozen by
  earlier tasks) that a task should activate, and the sort/split is done per
  layer, not over the whole network: every layer then gets the requested
  sparsity and later tasks never ask for more channels than are left.
* The gates have their own learning rate (``gate_lr``) and no weight decay: the
  ratio mu/sigma has to move by orders of magnitude within one task's few hundred
  steps, and weight decay on mu would act as an extra, unintended sparsity term.
* Class-IL NCM: classes with neither data nor exemplars at hand keep their
  previous mean (zero on channels added since); with the shared memory every
  seen class has exemplars, so all means are recomputed.
* gamma's effect depends on the optimizer: under Adam the gates move at about
  ``gate_lr`` per step whatever the gradient's scale, so small gammas (1e-4) already
  sparsify; plain SGD needs gammas orders of magnitude larger and has a narrow
  window between "all active" and "all inactive" on small problems.
* There is no normalisation layer in the spec backbones, hence no normalisation
  state to freeze. ResNet backbones are not built from a spec and are unsupported.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from bench.models import BackboneSpec, Preprocess, after_layer, before_layer, make_layer

SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"

# Defaults of the protocol's [strategies.ib] section (every key may be overridden there).
DEFAULTS: dict[str, Any] = {
    "gamma": 1e-4,  # global sparsity weight (used when target_active is not set)
    "threshold": 1.0,  # active when (mu/sigma)^2 >= threshold
    "mu_init": 1.0,
    # the reference resets sigma to 0.01 (mu/sigma = 100): with a few hundred steps per task the
    # gates cannot travel that far, so start closer to the threshold (chosen on held-out MNIST)
    "sigma_init": 0.3,
    "gate_lr": 0.01,  # learning rate of mu and log_sigma; None: the optimizer's
    "grow": None,  # channels added to a full layer; None: 1/8 of its initial width
    "target_active": None,  # adaptive per-channel gamma when set (fraction of free channels)
    "adapt_every": 10,
    "gamma_min": 1e-10,
    "gamma_max": 1e-3,
    "gamma_up": 1.1,
    "gamma_down": 0.9,
    "frozen_noise": False,
    "ncm": None,  # nearest-class-mean prediction; None: in Class-IL only
    "ncm_normalize": False,  # NCM on L2-normalised features (iCaRL's choice; not in the reference)
}


def unsupported(dataset: str, scenario: str, memory: int, backbone: str | None) -> str | None:
    from bench.models import backbone_spec

    if backbone_spec(dataset, backbone) is None:
        return f"ib rebuilds the backbone layer by layer; {backbone} is not built from a layer spec"
    return None


# ----------------------------------------------------------------------------- network


class GatedLayer(nn.Module):
    """One hidden layer: weights (conv or linear), ReLU, then a Gaussian gate per output channel."""

    def __init__(self, layer: nn.Module, mu_init: float, sigma_init: float):
        super().__init__()
        self.layer = layer
        width = layer.weight.shape[0]
        self.mu_init, self.sigma_init = mu_init, sigma_init
        self.mu = nn.Parameter(torch.full((width,), float(mu_init)))
        self.log_sigma = nn.Parameter(torch.full((width,), math.log(sigma_init)))
        # channels active for earlier tasks: frozen, deterministic gate
        self.register_buffer("frozen", torch.zeros(width, dtype=torch.bool))

    @property
    def width(self) -> int:
        return self.mu.shape[0]

    @property
    def conv(self) -> bool:
        return isinstance(self.layer, nn.Conv2d)

    def ratio2(self) -> torch.Tensor:
        """(mu / sigma)^2 per channel (no gradient)."""
        with torch.no_grad():
            return (self.mu / self.log_sigma.exp()) ** 2

    def information(self) -> torch.Tensor:
        """log(1 + (mu/sigma)^2) per channel: the information the channel passes on (differentiable)."""
        return torch.log1p((self.mu / self.log_sigma.exp()) ** 2)

    def forward(self, h: torch.Tensor, threshold: float, frozen_noise: bool) -> torch.Tensor:
        z = torch.relu(self.layer(h))
        shape = (1, -1, 1, 1) if z.dim() == 4 else (1, -1)
        if self.training:
            sigma = self.log_sigma.exp()
            if not frozen_noise:
                sigma = torch.where(self.frozen, torch.zeros_like(sigma), sigma)
            eps = torch.randn_like(z)
            gate = self.mu.view(shape) + sigma.view(shape) * eps
        else:
            keep = (self.mu / self.log_sigma.exp()) ** 2 >= threshold
            gate = torch.where(keep, self.mu, torch.zeros_like(self.mu)).view(shape)
        return z * gate


class IBFeatures(nn.Module):
    """The spec's hidden layers, each followed by a gate; returns the (flattened) last hidden layer."""

    def __init__(self, spec: BackboneSpec, threshold: float = 1.0, mu_init: float = 1.0,
                 sigma_init: float = 0.3, frozen_noise: bool = False):
        super().__init__()
        self.spec = spec
        self.threshold = threshold
        self.frozen_noise = frozen_noise
        self.preprocess = Preprocess(spec.mean, spec.std)
        self.layers = nn.ModuleList(GatedLayer(make_layer(spec, i), mu_init, sigma_init)
                                    for i in range(len(spec.layers)))
        # positions per channel where a conv map is flattened into the next linear layer (1 otherwise)
        self.spatial = _flat_positions(spec)

    @property
    def widths(self) -> list[int]:
        return [g.width for g in self.layers]

    @property
    def out_features(self) -> int:
        return self.layers[-1].width * self.spatial[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.preprocess(x)
        for i, gated in enumerate(self.layers):
            h = before_layer(self.spec, i, h)
            h = after_layer(self.spec, i, gated(h, self.threshold, self.frozen_noise))
        return h

    def active(self) -> list[torch.Tensor]:
        """Channels whose gate passes the threshold, per layer."""
        return [g.ratio2() >= self.threshold for g in self.layers]

    def input_mask(self, index: int, channels: torch.Tensor) -> torch.Tensor:
        """A channel mask of layer index-1 as a mask over the inputs of layer `index` (or of the
        heads when index == len(layers)): a flattened conv channel covers several inputs."""
        spatial = self.spatial[index - 1]
        if index < len(self.layers) and self.layers[index].conv:
            return channels
        return channels.repeat_interleave(spatial)

    def grow(self, index: int, k: int) -> None:
        """Add k inactive channels to layer `index` and zero input weights for them downstream."""
        gated = self.layers[index]
        old = gated.layer
        n_in = old.weight.shape[1] if gated.conv else old.in_features
        fresh = make_layer(self.spec, index, in_features=n_in, width=gated.width + k)
        with torch.no_grad():
            fresh.weight[: gated.width] = old.weight
            fresh.bias[: gated.width] = old.bias
        gated.layer = fresh
        gated.mu = nn.Parameter(torch.cat([gated.mu.data, torch.full((k,), float(gated.mu_init))]))
        gated.log_sigma = nn.Parameter(torch.cat([gated.log_sigma.data,
                                                  torch.full((k,), math.log(gated.sigma_init))]))
        gated.frozen = torch.cat([gated.frozen, torch.zeros(k, dtype=torch.bool)])
        if index + 1 < len(self.layers):
            nxt = self.layers[index + 1]
            if nxt.conv:
                nxt.layer.weight = _pad_inputs(nxt.layer.weight, k, dim=1)
                nxt.layer.in_channels += k
            else:
                nxt.layer.weight = _pad_inputs(nxt.layer.weight, k * self.spatial[index], dim=1)
                nxt.layer.in_features += k * self.spatial[index]


def _flat_positions(spec: BackboneSpec) -> list[int]:
    h, w = spec.in_shape[1:]
    out = []
    for layer in spec.layers:
        if layer.kind == "conv":
            if layer.pool:
                h, w = h // 2, w // 2
            out.append(h * w)
        else:
            h = w = 1
            out.append(1)
    return out


def _pad_inputs(weight: torch.Tensor, n: int, dim: int) -> nn.Parameter:
    shape = list(weight.shape)
    shape[dim] = n
    return nn.Parameter(torch.cat([weight.data, weight.new_zeros(shape)], dim=dim))


def _pad_linear_inputs(linear: nn.Linear, n: int) -> None:
    linear.weight = _pad_inputs(linear.weight, n, dim=1)
    linear.in_features += n


def _make_ib_net_class():
    """IBNet subclasses Avalanche's MultiTaskModule; defined lazily so importing this module stays cheap."""
    from avalanche.models import MultiTaskModule

    class IBNet(MultiTaskModule):
        """IB-gated backbone with one head per task (multi_head) or one growing head (Class-IL).

        `last_features` holds the features of the latest forward, for nearest-class-mean scoring.
        """

        def __init__(self, spec: BackboneSpec, multi_head: bool, **gate_kwargs):
            super().__init__()
            self.features = IBFeatures(spec, **gate_kwargs)
            self.multi_head = multi_head
            self.heads = nn.ModuleDict()  # task label -> Linear (multi-head)
            self.head: Optional[nn.Linear] = None  # Class-IL output layer
            self.frozen_heads: set[str] = set()
            self.last_features: Optional[torch.Tensor] = None

        def adaptation(self, experience) -> None:
            super().adaptation(experience)
            n_out = max(experience.classes_in_this_experience) + 1
            n_in = self.features.out_features
            if self.multi_head:
                for t in experience.task_labels:
                    if str(t) not in self.heads:
                        self.heads[str(t)] = nn.Linear(n_in, n_out).to(self._adaptation_device)
            elif self.head is None or self.head.out_features < n_out:
                new = nn.Linear(n_in, n_out).to(self._adaptation_device)
                if self.head is not None:
                    with torch.no_grad():  # keep the rows of classes already seen
                        new.weight[: self.head.out_features] = self.head.weight
                        new.bias[: self.head.out_features] = self.head.bias
                self.head = new

        def forward(self, x: torch.Tensor, task_labels: Any = None) -> torch.Tensor:
            if self.multi_head:
                return super().forward(x, task_labels)
            self.last_features = self.features(x)
            return self.head(self.last_features)

        def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
            self.last_features = self.features(x)
            return self.heads[str(task_label)](self.last_features)

        def grow(self, index: int, k: int) -> None:
            self.features.grow(index, k)
            if index == len(self.features.layers) - 1:
                n = k * self.features.spatial[index]
                for head in [*self.heads.values(), *([self.head] if self.head is not None else [])]:
                    _pad_linear_inputs(head, n)

    return IBNet


_IBNet = None


def IBNet(spec: BackboneSpec, multi_head: bool, **gate_kwargs):  # noqa: N802 (a class factory)
    """The IB network for `spec`: `IBNet(spec, multi_head=True, threshold=1.0, mu_init=1.0, sigma_init=0.3)`."""
    global _IBNet
    if _IBNet is None:
        _IBNet = _make_ib_net_class()
    return _IBNet(spec, multi_head, **gate_kwargs)


def is_ib_net(model: nn.Module) -> bool:
    return _IBNet is not None and isinstance(model, _IBNet)


# ----------------------------------------------------------------------------- plugin


def _make_plugin_class():
    from avalanche.core import SupervisedPlugin

    class IBPlugin(SupervisedPlugin):
        """Sparsity loss, freezing, growth and nearest-class-mean prediction for an `IBNet`.

        Works with any Avalanche supervised strategy whose model is an `IBNet`.
        `memory` is an object with `.tensors() -> (x, y, t)` (bench's ClassBalancedReplay);
        when None, a ClassBalancedReplay or Avalanche ReplayPlugin among the strategy's
        plugins is used for the class means, if any.
        """

        def __init__(self, gamma: float = 1e-4, grow: Optional[int] = None, gate_lr: Optional[float] = None,
                     target_active: Optional[float] = None, adapt_every: int = 10,
                     gamma_min: float = 1e-10, gamma_max: float = 1e-3, gamma_up: float = 1.1,
                     gamma_down: float = 0.9, ncm: Optional[bool] = None, memory: Any = None,
                     ncm_normalize: bool = False):
            super().__init__()
            self.gamma, self.grow_k, self.target_active = gamma, grow, target_active
            self.adapt_every, self.gamma_min, self.gamma_max = adapt_every, gamma_min, gamma_max
            self.gamma_up, self.gamma_down = gamma_up, gamma_down
            self.ncm, self.memory = ncm, memory
            self.gate_lr = gate_lr
            self.ncm_normalize = ncm_normalize
            self.tasks_done = 0
            self.iteration = 0
            self.channel_gamma: list[torch.Tensor] = []  # adaptive mode only
            # (parameter, mask of frozen entries, their values): restored after every step
            self.frozen: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
            self.class_means: dict[int, torch.Tensor] = {}
            self.reports: list[dict[str, Any]] = []
            self.initial_widths: Optional[list[int]] = None

        # -- training ------------------------------------------------------------

        def before_training_exp(self, strategy, **kwargs):
            model = strategy.model
            if not is_ib_net(model):
                raise TypeError("IBPlugin needs the model to be strategies.ib.IBNet")
            feats = model.features
            if self.initial_widths is None:
                self.initial_widths = feats.widths
            if self.tasks_done > 0:
                self._reinit_free(feats)
            self.channel_gamma = [torch.full((g.width,), self.gamma_min, device=g.mu.device)
                                  for g in feats.layers]
            self.iteration = 0
            self._snapshot(model)
            self._split_gates(strategy.optimizer, model)

        def before_backward(self, strategy, **kwargs):
            strategy.loss = strategy.loss + self.sparsity_loss(strategy.model)

        def before_update(self, strategy, **kwargs):
            # Not needed for exactness (after_update restores), but keeps frozen entries out of
            # any norm computed over the gradients.
            for p, mask, _ in self.frozen:
                if p.grad is not None:
                    p.grad.masked_fill_(mask, 0.0)

        def after_update(self, strategy, **kwargs):
            with torch.no_grad():
                for p, mask, values in self.frozen:
                    p.copy_(torch.where(mask, values, p))

        def after_training_iteration(self, strategy, **kwargs):
            self.iteration += 1
            if self.target_active is not None and self.iteration % self.adapt_every == 0:
                self._adapt_gamma(strategy.model.features)

        def after_training_exp(self, strategy, **kwargs):
            model = strategy.model
            self._merge_gates(strategy.optimizer)
            feats = model.features
            active = feats.active()
            with torch.no_grad():
                for i, gated in enumerate(feats.layers):
                    assert bool(active[i][gated.frozen].all()), "a frozen channel changed its gate"
                    if i > 0:  # weights from inactive channels into active ones: 0 from now on
                        cols = ~feats.input_mask(i, active[i - 1])
                        _zero_block(gated.layer.weight, active[i], cols)
                    gated.frozen = active[i].clone()
                if model.multi_head:  # the task's head reads only the channels active for it
                    cols = ~feats.input_mask(len(feats.layers), active[-1])
                    for t in strategy.experience.task_labels:
                        model.heads[str(t)].weight[:, cols] = 0.0
                        model.frozen_heads.add(str(t))
            with torch.no_grad():
                sparsity = float(sum(g.information().sum() for g in feats.layers))
            grown = [0] * len(feats.layers)
            for i, gated in enumerate(feats.layers):
                if bool(gated.frozen.all()):
                    grown[i] = self.grow_k or max(1, self.initial_widths[i] // 8)
                    model.grow(i, grown[i])
            self.tasks_done += 1
            if self.ncm if self.ncm is not None else not model.multi_head:
                self._update_class_means(strategy)
            self.reports.append({
                "active": [int(a.sum()) for a in active],
                "widths": [int(a.numel()) for a in active],
                "grown": grown,
                "params": sum(p.numel() for p in model.parameters()),
                "sparsity": round(sparsity, 4),
            })

        def sparsity_loss(self, model) -> torch.Tensor:
            """gamma * sum of log(1 + (mu/sigma)^2), global or per channel."""
            terms = [g.information() for g in model.features.layers]
            if self.target_active is None:
                return self.gamma * sum(t.sum() for t in terms)
            return sum((gam * t).sum() for gam, t in zip(self.channel_gamma, terms))

        def _adapt_gamma(self, feats: IBFeatures) -> None:
            with torch.no_grad():
                for gated, gam in zip(feats.layers, self.channel_gamma):
                    free = ~gated.frozen
                    n_free = int(free.sum())
                    if n_free == 0:
                        continue
                    ratio = (gated.mu / gated.log_sigma.exp()).abs()
                    n_keep = int(round(self.target_active * n_free))
                    order = torch.argsort(torch.where(free, ratio, torch.full_like(ratio, -1.0)),
                                          descending=True)
                    should_stay = torch.zeros_like(free)
                    should_stay[order[:n_keep]] = True
                    there = ratio ** 2 >= feats.threshold
                    up = free & ~should_stay & there
                    revive = free & should_stay & ~there
                    down = free & should_stay & there
                    gam[up] *= self.gamma_up
                    gam[down] *= self.gamma_down
                    gam[revive] = self.gamma_min
                    gated.log_sigma[revive] = math.log(gated.sigma_init)
                    gam.clamp_(self.gamma_min, self.gamma_max)

        def _reinit_free(self, feats: IBFeatures) -> None:
            """Fresh weights, bias and gate for every channel not frozen by earlier tasks."""
            with torch.no_grad():
                for i, gated in enumerate(feats.layers):
                    free = ~gated.frozen
                    old = gated.layer
                    n_in = old.weight.shape[1] if gated.conv else old.in_features
                    fresh = make_layer(feats.spec, i, in_features=n_in, width=gated.width).to(old.weight.device)
                    old.weight[free] = fresh.weight[free]
                    old.bias[free] = fresh.bias[free]
                    gated.mu[free] = gated.mu_init
                    gated.log_sigma[free] = math.log(gated.sigma_init)

        def _snapshot(self, model) -> None:
            """Masks and values of every frozen entry, taken after adaptation and re-initialisation."""
            feats = model.features
            self.frozen = []
            for i, gated in enumerate(feats.layers):
                rows = gated.frozen
                w = gated.layer.weight
                mask = rows.view(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()
                self._hold(w, mask)
                self._hold(gated.layer.bias, rows)
                self._hold(gated.mu, rows)
                self._hold(gated.log_sigma, rows)
            for name in model.frozen_heads:
                for p in model.heads[name].parameters():
                    self._hold(p, torch.ones_like(p, dtype=torch.bool))

        def _split_gates(self, optimizer, model) -> None:
            """Move mu and log_sigma into their own parameter group (own lr, no weight decay).

            Done per experience and undone at its end: Avalanche's `make_optimizer` cannot place
            new parameters (new heads) when the optimizer has several groups, so between
            experiences the optimizer holds one group, as the strategy built it.
            """
            gates = {id(p) for g in model.features.layers for p in (g.mu, g.log_sigma)}
            moved = []
            for group in optimizer.param_groups:
                moved += [p for p in group["params"] if id(p) in gates]
                group["params"] = [p for p in group["params"] if id(p) not in gates]
            lr = self.gate_lr if self.gate_lr is not None else optimizer.param_groups[0]["lr"]
            optimizer.add_param_group({"params": moved, "lr": lr, "weight_decay": 0.0, "ib_gates": True})

        def _merge_gates(self, optimizer) -> None:
            for group in [g for g in optimizer.param_groups if g.get("ib_gates")]:
                optimizer.param_groups.remove(group)
                optimizer.param_groups[0]["params"].extend(group["params"])

        def _hold(self, p: nn.Parameter, mask: torch.Tensor) -> None:
            if bool(mask.any()):
                self.frozen.append((p, mask, p.detach().clone()))

        # -- nearest class mean (Class-IL) ---------------------------------------------

        def _exemplars(self, strategy) -> Optional[list[torch.Tensor]]:
            memory = self.memory
            if memory is None:
                for plugin in strategy.plugins:
                    if hasattr(plugin, "tensors") and hasattr(plugin, "by_class"):
                        memory = plugin
                    elif hasattr(plugin, "storage_policy"):  # Avalanche's ReplayPlugin
                        from bench.strategy import materialize

                        buffer = plugin.storage_policy.buffer
                        return materialize(buffer) if len(buffer) else None
            if memory is None or len(memory) == 0:
                return None
            return memory.tensors()

        def _update_class_means(self, strategy) -> None:
            from bench.strategy import materialize

            model = strategy.model
            x, y, _ = materialize(strategy.experience.dataset.eval())[:3]
            stored = self._exemplars(strategy)
            if stored is not None:
                x, y = torch.cat([x, stored[0]]), torch.cat([y, stored[1]])
            feats = self._ncm_space(class_features(model, x, strategy.eval_mb_size, strategy.device))
            width = feats.shape[1]
            for c, mean in list(self.class_means.items()):  # channels added since: 0
                if mean.numel() < width:
                    self.class_means[c] = torch.cat([mean, mean.new_zeros(width - mean.numel())])
            for c in y.unique().tolist():
                mean = feats[y == c].mean(0)
                self.class_means[int(c)] = self._ncm_space(mean[None])[0]

        def _ncm_space(self, features: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(features, dim=1) if self.ncm_normalize else features

        def ncm_scores(self, features: torch.Tensor) -> torch.Tensor:
            """Negative distances to the class means; classes without a mean score below all others."""
            n = max(self.class_means) + 1
            means = torch.zeros(n, features.shape[1], device=features.device)
            known = torch.zeros(n, dtype=torch.bool, device=features.device)
            for c, m in self.class_means.items():
                means[c], known[c] = m.to(features.device), True
            scores = -torch.cdist(self._ncm_space(features), means)
            return torch.where(known, scores, scores.min() - 1.0)

        def after_eval_forward(self, strategy, **kwargs):
            model = strategy.model
            use_ncm = self.ncm if self.ncm is not None else not model.multi_head
            if use_ncm and self.class_means and model.last_features is not None:
                strategy.mb_output = self.ncm_scores(model.last_features)

        # -- records ------------------------------------------------------------

        def task_report(self) -> dict[str, Any]:
            """The latest task's record: active channels and widths per layer, growth, params, sparsity."""
            return dict(self.reports[-1])

    return IBPlugin


def _zero_block(weight: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
    """weight[rows][:, cols] = 0 for linear ([out, in]) and conv ([out, in, k, k]) weights."""
    block = rows.view(-1, 1) & cols.view(1, -1)
    weight[block] = 0.0


def class_features(model: nn.Module, x: torch.Tensor, batch_size: int, device: Any = "cpu") -> torch.Tensor:
    """Deterministic last-hidden-layer features of `x` (eval mode), in batches."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(model.features(x[start:start + batch_size].to(device)))
    model.train(was_training)
    return torch.cat(out)


_IBPlugin = None


def IBPlugin(**kwargs):  # noqa: N802 (a class factory)
    """The IB plugin (see the module docstring); keyword arguments as in `DEFAULTS`' plugin keys."""
    global _IBPlugin
    if _IBPlugin is None:
        _IBPlugin = _make_plugin_class()
    return _IBPlugin(**kwargs)


# ----------------------------------------------------------------------------- strategy


def settings(params: dict[str, Any]) -> dict[str, Any]:
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown [strategies.ib] settings: {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **params}


def build_parts(spec: BackboneSpec, multi_head: bool, params: dict[str, Any]):
    """(model, plugin) for a spec: what `build` assembles, for tests too."""
    s = settings(params)
    model = IBNet(spec, multi_head, threshold=s["threshold"], mu_init=s["mu_init"],
                  sigma_init=s["sigma_init"], frozen_noise=s["frozen_noise"])
    plugin = IBPlugin(gamma=s["gamma"], grow=s["grow"], target_active=s["target_active"],
                      adapt_every=s["adapt_every"], gamma_min=s["gamma_min"], gamma_max=s["gamma_max"],
                      gamma_up=s["gamma_up"], gamma_down=s["gamma_down"], ncm=s["ncm"],
                      gate_lr=s["gate_lr"], ncm_normalize=s["ncm_normalize"])
    return model, plugin


def build(ctx):
    spec = ctx.spec
    model, plugin = build_parts(spec, ctx.scenario == "task-il", dict(ctx.params))
    # Avalanche's make_optimizer maps parameters by name, so the parameters of new heads and
    # of grown layers (same names, new tensors) join the optimizer at the next experience.
    strategy = ctx.template(plugins=[plugin], model=model)
    from bench.memory import ClassBalancedReplay

    plugin.memory = next((p for p in strategy.plugins if isinstance(p, ClassBalancedReplay)), None)
    return strategy
