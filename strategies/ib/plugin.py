"""The IB plugin: sparsity loss, freezing of active channels, growth, nearest-class-mean prediction."""
from __future__ import annotations

import math
import time
from typing import Any, Optional

import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from bench.models import make_layer
from bench.strategy import materialize
from strategies import _ncm
from strategies.ib.gamma import AdaptiveGamma
from strategies.ib.network import IBFeatures, IBNet


class IBPlugin(SupervisedPlugin):
    """Sparsity loss, freezing, growth and nearest-class-mean prediction for an `IBNet`.

    Works with any Avalanche supervised strategy whose model is an `IBNet`.
    `memory` is an object with `.tensors() -> (x, y, t)` (bench's ClassBalancedReplay);
    when None, a ClassBalancedReplay or Avalanche ReplayPlugin among the strategy's
    plugins is used for the class means, if any.
    """

    def __init__(self, gamma: float = 1e-4, grow: Optional[int] = None, gate_lr: Optional[float] = None,
                 rate: Optional[float] = None, adaptive: Optional[dict[str, float]] = None, cap: bool = True,
                 ncm: Optional[bool] = None, ncm_means: str = "exemplars", memory: Any = None,
                 ncm_normalize: bool = False, ncm_scale: bool = True, head_reset: bool = True):
        super().__init__()
        self.gamma, self.grow_k, self.rate, self.cap = gamma, grow, rate, cap
        self.adaptive = dict(adaptive or {})  # AdaptiveGamma's keyword arguments (start, up, ...)
        self.ncm, self.ncm_means, self.memory = ncm, ncm_means, memory
        self.gate_lr = gate_lr
        self.ncm_normalize, self.ncm_scale = ncm_normalize, ncm_scale
        self.head_reset = head_reset
        self.tasks_done = 0
        self.adaptive_gamma: Optional[AdaptiveGamma] = None  # with a rate, one per task
        # (parameter, mask of frozen entries, their values): restored after every step
        self.frozen: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        self.class_means: dict[int, torch.Tensor] = {}
        # ncm_means == "kept": the last layer's channels (feature mask) each class's mean was taken on
        self.class_masks: dict[int, torch.Tensor] = {}
        # ncm_means == "kept": each channel's spread within the classes of the task that learned the mean
        self.class_spreads: dict[int, torch.Tensor] = {}
        self.reports: list[dict[str, Any]] = []
        self.initial_widths: Optional[list[int]] = None
        self._started = 0.0
        self._grown: list[int] = []  # channels added per layer for the task in training

    def new_channels(self) -> list[int]:
        """Channels a task may newly activate per layer: the rate times the initial width, at least 1."""
        return [max(1, round(self.rate * w)) for w in self.initial_widths]

    # -- training ------------------------------------------------------------

    def before_train_dataset_adaptation(self, strategy, **kwargs):
        # Before the strategy adapts the model and makes the optimizer, so that the grown
        # layers' new tensors (and new heads sized for them) are the ones trained. Grown when a
        # task arrives, not after the last one: no channels for a task that never comes.
        self._started = time.perf_counter()
        model = strategy.model
        if not isinstance(model, IBNet):
            raise TypeError("IBPlugin needs the model to be strategies.ib.IBNet")
        if self.initial_widths is None:
            self.initial_widths = model.features.widths
        self._grown = self._grow(model) if self.tasks_done > 0 else [0] * len(model.features.layers)

    def before_training_exp(self, strategy, **kwargs):
        model = strategy.model
        feats = model.features
        if self.tasks_done > 0:
            self._reinit_free(feats)
            # Re-initialised channels start without the moments of the previous task. Every other
            # trained entry is frozen (restored after each step), so the only state this drops
            # besides theirs is the Class-IL output layer's, whose classes change with the task.
            strategy.optimizer.state.clear()
        if self.rate is not None:
            self.adaptive_gamma = AdaptiveGamma(feats.layers, self.new_channels(), threshold=feats.threshold,
                                                **self.adaptive)
        free_weights = feats.begin_task()
        self._snapshot(model)
        self._split_optimizer(strategy.optimizer, model, free_weights)

    def before_backward(self, strategy, **kwargs):
        strategy.loss = strategy.loss + self.sparsity_loss(strategy.model)

    def before_update(self, strategy, **kwargs):
        # Not needed for exactness (after_update restores), but keeps frozen entries out of
        # any norm computed over the gradients.
        for p, mask, _ in self.frozen:
            if p.grad is not None:
                p.grad.masked_fill_(mask, 0.0)

    def after_update(self, strategy, **kwargs):
        # torch's optimizers leave a parameter without a gradient untouched (old Task-IL heads
        # are not in the current task's graph), so only the others need restoring: the cost
        # per step does not grow with the number of tasks seen.
        with torch.no_grad():
            for p, mask, values in self.frozen:
                if p.grad is not None:
                    p.copy_(torch.where(mask, values, p))

    def after_training_iteration(self, strategy, **kwargs):
        if self.adaptive_gamma is not None:
            self.adaptive_gamma.step()

    def after_training_exp(self, strategy, **kwargs):
        model = strategy.model
        feats = model.features
        feats.end_task()
        self._merge_optimizer(strategy.optimizer)
        capped = self._cap(feats) if self.rate is not None and self.cap else [0] * len(feats.layers)
        gamma = self._gamma_report(feats)  # before the task's new channels freeze
        active = feats.active()
        with torch.no_grad():
            for i, gated in enumerate(feats.layers):
                assert bool(active[i][gated.frozen].all()), "a frozen channel changed its gate"
                if i > 0:  # weights from inactive channels into active ones: 0 from now on
                    cols = ~feats.input_mask(i, active[i - 1])
                    _zero_block(gated.layer.weight, active[i], cols)
                gated.since[active[i] & ~gated.frozen] = self.tasks_done  # frozen from now on
            if model.multi_head:  # the task's head reads only the channels active for it
                cols = ~feats.input_mask(len(feats.layers), active[-1])
                for t in strategy.experience.task_labels:
                    model.heads[str(t)].weight[:, cols] = 0.0
                    model.frozen_heads[str(t)] = self.tasks_done
            sparsity = float(sum(g.information().sum() for g in feats.layers))
        self.tasks_done += 1
        # growth is decided as each task after the first arrives: the share of those (task, layer)
        # pairs in which a layer grew so far (the reference: "only ... in 25% of cases" on Omniglot)
        later = [r["grown"] for r in self.reports[1:]] + ([self._grown] if self.reports else [])
        chances = [k for grown in later for k in grown]
        self.reports.append({
            "active": [int(a.sum()) for a in active],
            "widths": [int(a.numel()) for a in active],
            "grown": self._grown,
            "grew_share": round(sum(k > 0 for k in chances) / len(chances), 4) if chances else None,
            "capped": capped,
            "params": sum(p.numel() for p in model.parameters()),
            "sparsity": round(sparsity, 4),
            "gamma": gamma,
            "train_s": round(time.perf_counter() - self._started, 3),
        })

    def after_training(self, strategy, **kwargs):
        # After every plugin's after_training_exp: the replay memory has taken this task's exemplars.
        model = strategy.model
        if self.reports and (self.ncm if self.ncm is not None else not model.multi_head):
            self._update_class_means(strategy)

    def sparsity_loss(self, model) -> torch.Tensor:
        """gamma * sum of log(1 + (mu/sigma)^2); per channel and adapted when a rate is set."""
        if self.adaptive_gamma is not None:
            return self.adaptive_gamma.penalty()
        return self.gamma * sum(g.information().sum() for g in model.features.layers)

    def _gamma_report(self, feats: IBFeatures) -> float | list[float | None]:
        """The sparsity weight the task trained with: the global gamma (one number) or, with a rate,
        per layer the mean adapted gamma of the channels free during the task at its end (None
        where a layer had none)."""
        if self.adaptive_gamma is None:
            return self.gamma
        out = []
        for gated, gam in zip(feats.layers, self.adaptive_gamma.gamma):
            free = ~gated.frozen
            out.append(float(f"{float(gam[free].mean()):.4g}") if bool(free.any()) else None)
        return out

    def _cap(self, feats: IBFeatures) -> list[int]:
        """Switch off the free channels beyond the rate, lowest |mu/sigma| first; how many, per layer.

        For tasks too short for the adaptive gamma to converge; the switched-off channels get a
        gate of exactly 0 (mu = 0), as any inactive channel at test time. It never adds channels
        (a layer short of the rate stays short), and it cuts features the task was trained with:
        the shorter the task, the more it cuts (see the package docstring)."""
        capped = []
        with torch.no_grad():
            for gated, keep in zip(feats.layers, self.new_channels()):
                new = (gated.ratio2() >= feats.threshold) & ~gated.frozen
                extra = int(new.sum()) - keep
                if extra > 0:
                    ratio = torch.where(new, gated.ratio2(), torch.full_like(gated.mu, math.inf))
                    gated.mu[torch.argsort(ratio)[:extra]] = 0.0
                capped.append(max(0, extra))
        return capped

    def _grow(self, model: IBNet) -> list[int]:
        """Add channels for the arriving task; how many, per layer.

        Without a rate, the reference's rule: a layer whose channels are all active (its capacity
        upper bound) grows by `grow` (default 1/8 of its initial width). With one: a layer with
        fewer free channels than the task may take grows by what it needs (or `grow` when set
        and larger)."""
        grown = []
        for i, gated in enumerate(model.features.layers):
            free = int((~gated.frozen).sum())
            if self.rate is not None:
                need = self.new_channels()[i] - free
                k = max(need, self.grow_k or 0) if need > 0 else 0
            else:
                k = (self.grow_k or max(1, self.initial_widths[i] // 8)) if free == 0 else 0
            if k:
                model.grow(i, k)
            grown.append(k)
        return grown

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
            if w.requires_grad:  # not while its free rows train on their own (IBFeatures.begin_task)
                self._hold(w, rows.view(-1, *([1] * (w.dim() - 1))).expand_as(w).clone())
            self._hold(gated.layer.bias, rows)
            self._hold(gated.mu, rows)
            self._hold(gated.log_sigma, rows)
        for name in model.frozen_heads:
            for p in model.heads[name].parameters():
                self._hold(p, torch.ones_like(p, dtype=torch.bool))

    def _split_optimizer(self, optimizer, model, free_weights: list[nn.Parameter]) -> None:
        """Gates (mu, log_sigma) into a group of their own (own lr, no weight decay); the free rows'
        weights of a task trained in two parts (IBFeatures.begin_task) into one like the first.

        Undone at the task's end: Avalanche's `make_optimizer` cannot place new parameters (new
        heads) when the optimizer has several groups, so between experiences the optimizer holds
        one group, as the strategy built it.
        """
        gates = {id(p) for g in model.features.layers for p in (g.mu, g.log_sigma)}
        moved = []
        for group in optimizer.param_groups:
            moved += [p for p in group["params"] if id(p) in gates]
            group["params"] = [p for p in group["params"] if id(p) not in gates]
        first = optimizer.param_groups[0]
        lr = self.gate_lr if self.gate_lr is not None else first["lr"]
        if free_weights:
            optimizer.add_param_group({**{k: v for k, v in first.items() if k != "params"},
                                       "params": free_weights, "ib_free_rows": True})
        optimizer.add_param_group({"params": moved, "lr": lr, "weight_decay": 0.0, "ib_gates": True})

    def _merge_optimizer(self, optimizer) -> None:
        for group in [g for g in optimizer.param_groups if g.get("ib_gates") or g.get("ib_free_rows")]:
            optimizer.param_groups.remove(group)
            if group.get("ib_gates"):
                optimizer.param_groups[0]["params"].extend(group["params"])
            else:  # written back into the layers by IBFeatures.end_task
                for p in group["params"]:
                    optimizer.state.pop(p, None)

    def _hold(self, p: nn.Parameter, mask: torch.Tensor) -> None:
        if bool(mask.any()):
            self.frozen.append((p, mask, p.detach().clone()))

    # -- Class-IL output layer -------------------------------------------------------

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        # Before the model adaptation, which widens the head for the new classes by copying
        # these rows, and before the optimizer is made: the whole head starts afresh.
        if self.head_reset and self.tasks_done > 0:
            self._reset_head(strategy.model)

    @staticmethod
    def _reset_head(model: IBNet) -> None:
        """Fresh weights for the single-head output layer (reference I (c.2)).

        The layer only shapes the features during training (prediction is by class means), and
        it is re-learnt each task from the frozen old features, the new ones and the memory."""
        if not model.multi_head and model.head is not None:
            model.head.reset_parameters()

    # -- nearest class mean (Class-IL) ---------------------------------------------

    def _exemplars(self, strategy) -> Optional[list[torch.Tensor]]:
        memory = self.memory
        if memory is None:
            for plugin in strategy.plugins:
                if hasattr(plugin, "tensors") and hasattr(plugin, "by_class"):
                    memory = plugin
                elif hasattr(plugin, "storage_policy"):  # Avalanche's ReplayPlugin
                    buffer = plugin.storage_policy.buffer
                    return materialize(buffer) if len(buffer) else None
        if memory is None or len(memory) == 0:
            return None
        return memory.tensors()

    def _update_class_means(self, strategy) -> None:
        """Class means of the last hidden layer's features, after a task.

        "exemplars": every class with data or exemplars at hand, recomputed on all channels
        (strategies/_ncm.py, the rule replay_ncm shares). "kept" (the reference's reading): the new
        classes' means from the task's data, each kept with the channels active after its task and
        compared on those only from then on, and with the channels' spread within the task's
        classes for `ncm_scale`."""
        model = strategy.model
        x, y, _ = materialize(strategy.experience.dataset.eval())[:3]
        stored = self._exemplars(strategy) if self.ncm_means == "exemplars" else None
        if stored is not None:
            x, y = torch.cat([x, stored[0]]), torch.cat([y, stored[1]])
        feats = _ncm.hidden_features(model.features, x, strategy.eval_mb_size, strategy.device)
        y = y.to(feats.device)
        width = feats.shape[1]
        for kept, fill in ((self.class_means, 0), (self.class_masks, 0), (self.class_spreads, 1)):
            for c, v in list(kept.items()):  # channels added since: not compared (mask 0)
                if v.numel() < width:
                    kept[c] = torch.cat([v, v.new_full((width - v.numel(),), fill)])
        self.class_means.update(_ncm.class_means(feats, y, self.ncm_normalize))
        if self.ncm_means == "kept":
            features = model.features
            active = features.input_mask(len(features.layers), features.layers[-1].frozen).to(feats.device)
            spread = _ncm.pooled_spread(feats, y, active)
            for c in y.unique().tolist():
                self.class_masks[int(c)] = active.clone()
                self.class_spreads[int(c)] = spread

    def ncm_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Negative distances to the class means; classes without a mean score below all others.

        With kept means, the distance is the mean squared difference over the channels the class's
        mean was taken on, so classes learned on fewer channels are not favoured; with `ncm_scale`
        each channel's difference is first divided by its spread (a diagonal Mahalanobis distance:
        a channel on which the class's own samples vary little no longer looks close to everything)."""
        if self.ncm_means != "kept":
            return _ncm.scores(features, self.class_means, self.ncm_normalize)
        n, device = max(self.class_means) + 1, features.device
        means = torch.zeros(n, features.shape[1], device=device)
        masks, spreads = torch.zeros_like(means), torch.ones_like(means)
        known = torch.zeros(n, dtype=torch.bool, device=device)
        for c, m in self.class_means.items():
            means[c], known[c] = m.to(device), True
            masks[c], spreads[c] = self.class_masks[c].to(device).float(), self.class_spreads[c].to(device)
        weights = masks / spreads ** 2 if self.ncm_scale else masks
        # sum over compared channels of w (f - m)^2, without a [batch, classes, channels] tensor
        dist2 = (features ** 2) @ weights.T - 2 * features @ (weights * means).T + (weights * means ** 2).sum(1)
        scores = -dist2 / masks.sum(1).clamp(min=1)
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


def _zero_block(weight: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
    """weight[rows][:, cols] = 0 for linear ([out, in]) and conv ([out, in, k, k]) weights."""
    block = rows.view(-1, 1) & cols.view(1, -1)
    weight[block] = 0.0
