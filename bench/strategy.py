"""What every strategy file gets: a context with the protocol's settings and the shared pieces.

A strategy file in `strategies/` builds an Avalanche strategy from a
`StrategyContext`. The context hands out the dataset's backbone with the
scenario's head, the protocol's optimizer, and the matched replay memory, and
`ctx.template(...)` assembles an Avalanche template that reads minibatches
straight from in-memory tensors (Avalanche's per-sample DataLoader is several
times slower than the training itself on these small networks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from bench import models
from bench.batches import TensorBatches, materialize  # noqa: F401  (materialize: strategy files use it)
from bench.scenarios import Split


class FastLoading:
    """Mixin for Avalanche templates: the train and eval loaders iterate tensors, not samples.

    The adapted dataset (experience plus any memory a plugin concatenated) is read
    once per experience; epochs then cost only the model's own compute.
    """

    data_generator: torch.Generator
    augment = None  # a batch transform (bench.augment.CropFlip) applied to every training minibatch
    mb_raw_x: torch.Tensor  # this minibatch's inputs before `augment`

    def _unpack_minibatch(self):
        super()._unpack_minibatch()
        # the inputs as read, before augmentation: what a method's own buffer stores (DER++, ER-ACE)
        self.mb_raw_x = self.mbatch[0]
        # Here, after any replay has joined the batch, so that new samples and exemplars of the
        # shared memory alike are augmented, whatever the strategy; evaluation batches pass unchanged.
        if self.augment is not None and self.is_training:
            self.mbatch[0] = self.augment(self.mbatch[0])

    def make_train_dataloader(self, shuffle: bool = True, **kwargs):
        self.dataloader = TensorBatches(materialize(self.adapted_dataset), self.train_mb_size,
                                        shuffle, self.data_generator)

    def make_eval_dataloader(self, **kwargs):
        # test sets are read once per cell, not once per evaluation (T(T+1)/2 of them); the
        # benchmark holds its datasets for the whole cell, so their ids stay valid keys
        cache = self.__dict__.setdefault("_eval_tensors", {})
        key = id(self.experience.dataset)
        if key not in cache:
            cache[key] = materialize(self.adapted_dataset)
        self.dataloader = TensorBatches(cache[key], self.eval_mb_size, False)

    def model_adaptation(self, model=None):
        # Avalanche's batch templates adapt the model, then move it with `model.to(device)`, before
        # every training and every evaluated experience (T(T+1)/2 of them); on a model already
        # there that call still reassigns every parameter's data, ~4% of a 1-epoch Omniglot cell.
        # This adapts as they do and moves only a model with a tensor elsewhere (a head just
        # added). Templates with an adaptation of their own (JointTraining) and online
        # experiences keep Avalanche's.
        from avalanche.benchmarks import OnlineCLExperience
        from avalanche.models.utils import avalanche_model_adaptation
        from avalanche.training.templates.observation_type import BatchObservation

        if (super().model_adaptation.__func__ is not BatchObservation.model_adaptation
                or isinstance(self.experience, OnlineCLExperience)):
            return super().model_adaptation(model)
        model = self.model if model is None else model
        avalanche_model_adaptation(model, self.experience)
        device = torch.device(self.device)
        if any(t.device != device for t in (*model.parameters(), *model.buffers())):
            model.to(device)
        return model


_fast_classes: dict[type, type] = {}


def fast(template_cls: type) -> type:
    """The Avalanche template class with `FastLoading` mixed in (one subclass per template)."""
    if template_cls not in _fast_classes:
        _fast_classes[template_cls] = type(f"Fast{template_cls.__name__}", (FastLoading, template_cls), {})
    return _fast_classes[template_cls]


@dataclass
class StrategyContext:
    """A cell's resolved protocol: what a strategy file may read to build itself."""

    dataset: str
    scenario: str
    split: Split  # the classes of each task
    memory: int
    epochs: int
    batch_size: int
    eval_batch_size: int
    optimizer: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    backbone: str | None = None
    seed: int = 0
    device: str = "cpu"
    evaluator: Any = None  # an Avalanche EvaluationPlugin (bench run --log), else none
    augment: bool = False  # random crop and flip of training batches (the protocol's `augment`)
    # the strategy's declared MEMORY: only "shared" gets the matched buffer from `template`
    memory_kind: str = "shared"
    width: float = 1.0  # multiplier on every hidden layer's width (the rows "at IB's size")

    @property
    def spec(self) -> models.BackboneSpec | None:
        return models.backbone_spec(self.dataset, self.backbone, self.width)

    def features(self) -> nn.Module:
        return models.build_features(self.dataset, self.backbone, self.width)

    def model(self, features: nn.Module | None = None) -> nn.Module:
        """Backbone plus the scenario's head: one head per task (Task-IL) or one growing head (Class-IL)."""
        from bench.heads import ClassILNet, TaskILNet

        features = features or self.features()
        return TaskILNet(features) if self.scenario == "task-il" else ClassILNet(features)

    def make_optimizer(self, params, overrides: dict[str, Any] | None = None) -> torch.optim.Optimizer:
        cfg = {**self.optimizer, **(overrides or {})}
        name = cfg.get("name", "sgd")
        if name == "sgd":
            return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.0),
                                   weight_decay=cfg.get("weight_decay", 0.0))
        if name == "adam":
            return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
        raise ValueError(f"unknown optimizer {name!r} (valid: sgd, adam)")

    def replay(self):
        """The matched class-balanced memory, or None when the budget is 0."""
        from bench.memory import ClassBalancedReplay

        return ClassBalancedReplay(self.memory, seed=self.seed) if self.memory > 0 else None

    def template(self, cls: type | None = None, plugins: Sequence[Any] = (), replay: bool = True,
                 **kwargs):
        """An Avalanche strategy of class `cls` with the protocol's optimizer, epochs and batch sizes.

        The shared memory (when the budget is non-zero) is added for strategies that declare
        `MEMORY = "shared"` only, so every strategy without a memory of its own gets the same
        one; a strategy declaring "own" or "none" never gets it, whatever it passes, and
        `replay=False` lets a "shared" one leave it out. Templates that build their own model
        from a feature extractor (iCaRL) pass theirs in `kwargs`.
        """
        from avalanche.training.templates import SupervisedTemplate

        if "feature_extractor" not in kwargs:
            kwargs.setdefault("model", self.model())
            kwargs.setdefault("criterion", nn.CrossEntropyLoss())
            kwargs.setdefault("optimizer", self.make_optimizer(kwargs["model"].parameters()))
        plugins = list(plugins)
        memory = self.replay() if replay and self.memory_kind == "shared" else None
        if memory is not None:
            plugins.append(memory)
        strategy = fast(cls or SupervisedTemplate)(
            train_mb_size=self.batch_size, train_epochs=self.epochs, eval_mb_size=self.eval_batch_size,
            device=self.device, plugins=plugins, evaluator=self.evaluator, **kwargs)
        strategy.data_generator = torch.Generator().manual_seed(self.seed)
        if self.augment:
            from bench.augment import CropFlip

            strategy.augment = CropFlip(self.seed)
        return strategy
