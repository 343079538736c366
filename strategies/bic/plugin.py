"""BiC's plugin: held-out validation samples, replay, distillation, and the bias layer's training."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.models.bic_model import BiasLayer
from torch.optim.lr_scheduler import MultiStepLR

from bench.batches import TensorBatches
from bench.memory import ClassBalancedReplay, ReplayBatches


class BiasCorrection(SupervisedPlugin):
    def __init__(self, size: int, val_fraction: float, temperature: float, bias_epochs: int, bias_lr: float,
                 seed: int = 0):
        super().__init__()
        n_val = min(size - 1, max(1, round(val_fraction * size))) if size > 1 else 0
        self.exemplars = ClassBalancedReplay(size - n_val, seed=seed)
        self.validation = ClassBalancedReplay(n_val, seed=seed + 1) if n_val else None
        self.temperature, self.bias_epochs, self.bias_lr = temperature, bias_epochs, bias_lr
        self.generator = torch.Generator().manual_seed(seed)
        self.old_model: torch.nn.Module | None = None
        self.bias: BiasLayer | None = None  # corrects the latest task's classes
        self.old_classes: list[int] = []
        self.new_classes: list[int] = []
        self.last_distillation = 0.0

    def exemplars_held(self) -> int:
        return self.exemplars.exemplars_held() + (self.validation.exemplars_held() if self.validation else 0)

    def before_training_exp(self, strategy, **kwargs):
        x, y, t = strategy.dataloader.tensors[:3]
        self.new_classes = sorted(set(y.tolist()) - set(self.old_classes))
        train = torch.ones(len(y), dtype=torch.bool)
        if self.validation is not None:  # each new class gives its share of validation samples
            share = max(1, self.validation.size // (len(self.old_classes) + len(self.new_classes)))
            for c in self.new_classes:
                idx = torch.nonzero(y == c).flatten()
                train[idx[torch.randperm(len(idx), generator=self.generator)[:share]]] = False
            self.validation.add(x[~train], y[~train], t[~train])
        self.train_part = [x[train], y[train], t[train]]
        batches = TensorBatches(self.train_part, strategy.train_mb_size, True, strategy.data_generator)
        strategy.dataloader = (ReplayBatches(batches, self.exemplars.tensors(), self.exemplars.generator)
                               if self.exemplars.by_class else batches)

    def before_backward(self, strategy, **kwargs):
        if self.old_model is None or not self.old_classes:
            return
        with torch.no_grad():
            target = self.old_model(strategy.mb_x)
            if self.bias is not None:
                target = self.bias(target)
        old = self.old_classes
        soft = F.softmax(target[:, old] / self.temperature, dim=1)  # over classes, per sample
        distillation = F.cross_entropy(strategy.mb_output[:, old] / self.temperature, soft)
        lam = len(old) / (len(old) + len(self.new_classes))
        strategy.loss = (1 - lam) * strategy.loss + lam * distillation
        self.last_distillation = distillation.item()

    def after_training_exp(self, strategy, **kwargs):
        self.exemplars.add(*self.train_part)
        self.train_part = []
        if self.old_classes and self.validation is not None:  # from the second task on
            self.bias = self._fit_bias(strategy)
        self.old_classes = sorted(set(self.old_classes) | set(self.new_classes))
        self.old_model = copy.deepcopy(strategy.model).eval()
        for p in self.old_model.parameters():
            p.requires_grad = False

    def after_eval_forward(self, strategy, **kwargs):
        if self.bias is not None:
            strategy.mb_output = self.bias(strategy.mb_output)

    def _fit_bias(self, strategy) -> BiasLayer:
        """The paper's stage 2: alpha and beta of the new classes' logits, fitted on the validation samples."""
        bias = BiasLayer(self.new_classes).to(strategy.device)
        optimizer = torch.optim.SGD(bias.parameters(), lr=self.bias_lr, momentum=0.9)
        schedule = MultiStepLR(optimizer, milestones=[50, 100, 150], gamma=0.1)  # Avalanche's, after FACIL
        x, y, _ = self.validation.tensors()
        was_training = strategy.model.training
        strategy.model.eval()
        with torch.no_grad():
            logits = torch.cat([strategy.model(b[0].to(strategy.device))
                                for b in TensorBatches([x], strategy.eval_mb_size, False)])
        y = y.to(strategy.device)
        for _ in range(self.bias_epochs):
            for (idx,) in TensorBatches([torch.arange(len(y))], strategy.train_mb_size, True, self.generator):
                # the original's L2 on beta (0.1 x beta^2 / 2), as in Avalanche
                loss = F.cross_entropy(bias(logits[idx]), y[idx]) + 0.1 * bias.beta.sum() ** 2 / 2
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            schedule.step()
        strategy.model.train(was_training)
        bias.eval()
        for p in bias.parameters():
            p.requires_grad = False
        return bias
