"""The knowledge base and active column of Progress & Compress, and the compress phase as a plugin."""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.heads import MultiHeadModule
from bench.models import BackboneSpec, Preprocess, after_layer, before_layer, make_layer, count_params
from bench.strategy import TensorBatches, materialize
from strategies._fisher import empirical_fisher, penalty

TARGET_BATCH = 128  # images per no-grad pass when the compress targets are computed (CPU: ~1.6x faster per image than 1000)


class PnCNet(MultiHeadModule):
    """One knowledge base (backbone layers, a head per task) and one active column with laterals from it.

    `phase` picks the path of `forward`: "active" while a task is learnt
    (progress), "kb" otherwise (compress and every evaluation).
    """

    def __init__(self, spec: BackboneSpec, first_task_classes: int):
        super().__init__()
        self.spec = spec
        self.preprocess = Preprocess(spec.mean, spec.std)
        n = len(spec.layers)
        self.kb = nn.ModuleList(make_layer(spec, i) for i in range(n))
        self.kb_heads = nn.ModuleDict()
        self.phase = "kb"
        self._new_active(first_task_classes)

    def _new_active(self, n_classes: int) -> None:
        n = len(self.spec.layers)
        # new modules (not re-initialised ones): Avalanche's optimizer update then drops their old state
        self.active = nn.ModuleList(make_layer(self.spec, i) for i in range(n))
        self.laterals = nn.ModuleList(make_layer(self.spec, i) for i in range(1, n))
        self.active_head = nn.Linear(self.spec.out_features, n_classes)

    def adaptation(self, experience) -> None:
        super().adaptation(experience)
        if not self.training:
            return
        device = next(self.parameters()).device
        n_classes = max(experience.classes_in_this_experience) + 1
        for task in experience.task_labels:
            if str(task) not in self.kb_heads:
                self.kb_heads[str(task)] = nn.Linear(self.spec.out_features, n_classes).to(device)
                self._new_active(n_classes)
                self.to(device)

    def _hidden(self, layers, x: torch.Tensor, side: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        h = before_layer(self.spec, 0, self.preprocess(x))
        outs = []
        for i, layer in enumerate(layers):
            z = layer(h)
            if side is not None and i > 0:
                z = z + self.laterals[i - 1](side[i - 1])
            h = after_layer(self.spec, i, torch.relu(z))
            outs.append(h)
        return outs

    def kb_logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.kb_heads[str(task)](self._hidden(self.kb, x)[-1])

    def active_logits(self, x: torch.Tensor, kb: nn.ModuleList | None = None) -> torch.Tensor:
        """The active column's logits; its laterals read `kb` (default: the knowledge base itself)."""
        with torch.no_grad():  # the knowledge base is frozen while the active column learns
            side = self._hidden(self.kb if kb is None else kb, x)
        return self.active_head(self._hidden(self.active, x, side)[-1])

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.active_logits(x) if self.phase == "active" else self.kb_logits(x, task_label)

    def kb_parameters(self) -> list[nn.Parameter]:
        return list(self.kb.parameters())


def _trainable(modules, flag: bool) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(flag)


class CompressPlugin:
    """Switches the network's phase and runs the compress phase after each task's progress phase.

    Avalanche calls a plugin's hooks by name, so this need not subclass its SupervisedPlugin.
    The plugin holds only the running Fisher and the anchor weights (no reference to the network),
    so the record's extra state counts exactly those.
    """

    def __init__(self, make_optimizer: Callable, epochs: int, lam: float, gamma: float, batch_size: int,
                 seed: int = 0):
        self.make_optimizer, self.epochs, self.lam, self.gamma = make_optimizer, epochs, lam, gamma
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.fisher: list[torch.Tensor] = []  # F*, the running Fisher of the knowledge base's layers
        self.anchor: list[torch.Tensor] = []  # knowledge-base weights after the previous task
        self.reports: list[dict] = []
        # the distillation loss on the first and last batch of the latest compress phase (in the task's report)
        self.last_compress: dict[str, float] = {}

    def before_training_exp(self, strategy, **kwargs):
        model = strategy.model
        model.phase = "active"
        _trainable([model.kb, model.kb_heads], False)
        _trainable([model.active, model.laterals, model.active_head], True)

    def after_training_exp(self, strategy, **kwargs):
        model, device = strategy.model, strategy.device
        task = int(strategy.experience.task_label)
        x, y, t = materialize(strategy.experience.dataset.eval())
        # the progress phase's augmentation (bench.augment.CropFlip, seeded by the cell's seed), or None
        self.compress(model, task, x, device, getattr(strategy, "augment", None))
        self.update_fisher(model, task, [x, y, t], device)
        model.phase = "kb"
        self.reports.append(self._report(model, task))

    def compress(self, model: PnCNet, task: int, x: torch.Tensor, device, augment=None) -> None:
        """Distil the active column into the knowledge base, under the online EWC penalty.

        The targets are the active column as progress left it, a frozen teacher: its laterals read
        the knowledge base as it was before compress. Read from the knowledge base being trained,
        the targets moved with it, and the two could meet anywhere (on Split-CIFAR-10 the first
        task's knowledge base ended at chance while its active column scored 95%). Without
        augmentation the images are fixed, so the targets are computed once, before compress
        moves the knowledge base; with it (`augment`, as in the progress phase), every batch is
        a new view, so the teacher reads a frozen copy of the knowledge base batch by batch."""
        _trainable([model.active, model.laterals, model.active_head], False)
        teacher_kb = copy.deepcopy(model.kb) if augment is not None else None
        targets = None if augment is not None else self.targets(model, x, device)
        kb = [model.kb, model.kb_heads[str(task)]]
        _trainable(kb, True)
        params = [p for m in kb for p in m.parameters()]
        optimizer = self.make_optimizer(params)
        weight = [self.gamma * f for f in self.fisher]  # the penalty's, fixed for the whole phase
        was_training = model.training
        model.train()
        first = last = None
        index = torch.arange(len(x))
        for _ in range(self.epochs):
            for batch, idx in TensorBatches([x, index], self.batch_size, True, self.generator):
                if augment is None:
                    batch, target = batch.to(device), targets[idx].to(device)
                else:
                    batch = augment(batch.to(device))
                    with torch.no_grad():
                        target = F.log_softmax(model.active_logits(batch, teacher_kb), 1)
                kl = F.kl_div(F.log_softmax(model.kb_logits(batch, task), 1), target, log_target=True,
                              reduction="batchmean")
                loss = kl
                if self.fisher:
                    loss = loss + self.lam * penalty(model.kb_parameters(), self.anchor, weight)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                first = kl.item() if first is None else first
                last = kl.item()
        model.train(was_training)
        _trainable(kb, False)
        self.last_compress = {"compress_kl_first_batch": first, "compress_kl_last_batch": last}

    @staticmethod
    def targets(model: PnCNet, x: torch.Tensor, device) -> torch.Tensor:
        """The active column's log-probabilities for every image of the task (on the knowledge base as it is)."""
        with torch.no_grad():
            return torch.cat([F.log_softmax(model.active_logits(x[i:i + TARGET_BATCH].to(device)), 1).cpu()
                              for i in range(0, len(x), TARGET_BATCH)])

    def update_fisher(self, model: PnCNet, task: int, data: list[torch.Tensor], device) -> None:
        params = model.kb_parameters()
        _trainable([model.kb], True)
        fisher = empirical_fisher(lambda x, t: model.kb_logits(x, task), params,
                                  TensorBatches(data, self.batch_size, shuffle=False), device)
        _trainable([model.kb], False)
        self.fisher = fisher if not self.fisher else [self.gamma * a + b for a, b in zip(self.fisher, fisher)]
        self.anchor = [p.detach().clone() for p in params]

    def _report(self, model: PnCNet, task: int) -> dict:
        state = sum(t.numel() * t.element_size() for t in [*self.fisher, *self.anchor])
        return {"task": task, "params": count_params(model), "kb_params": count_params(model.kb),
                "kb_head_params": count_params(model.kb_heads),
                "active_params": count_params(model.active) + count_params(model.laterals)
                + count_params(model.active_head),
                "fisher_anchor_bytes": state, **self.last_compress}

    def task_report(self) -> dict:
        return self.reports[-1]
