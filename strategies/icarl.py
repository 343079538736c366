"""iCaRL (Rebuffi et al. 2017), Avalanche's ICaRL: herding exemplars of the same budget, nearest-mean prediction."""
from torch import nn

from bench.settings import Setting

SCENARIOS = ("class-il",)
MEMORY = "own"
SETTINGS = {"flip_means": Setting(False, help="average each exemplar's features with its mirror image's in "
                                               "the class means: only for flip-invariant data (CIFAR)")}


def unsupported(dataset, scenario, memory, backbone):
    return None if memory > 0 else "icarl keeps its own exemplars and needs a memory budget (--memory > 0)"


def invalid(memory, n_classes):
    if memory < n_classes:
        return f"icarl needs at least one exemplar per class: --memory {memory} < {n_classes} classes"
    return None


def _plugin_class():
    """Avalanche's iCaRL plugin, held to the budget and flipping only when told to (built on first use:
    importing Avalanche is slow and this module must import fast)."""
    import torch
    from avalanche.training.supervised.icarl import _ICaRLPlugin

    class BudgetICaRLPlugin(_ICaRLPlugin):
        """Avalanche keeps ceil(M / classes seen) exemplars per class, up to classes - 1 over the
        budget; here the first classes get the remainder of M, as in bench/memory.py. Avalanche also
        averages every class mean with that of the mirrored exemplars, which is wrong for digits."""

        def __init__(self, memory_size: int, flip: bool):
            super().__init__(memory_size, buffer_transform=None, fixed_memory=True)
            self.flip = flip

        def exemplars_held(self) -> int:
            return sum(len(x) for x in self.x_memory)

        def reduce_exemplar_set(self, strategy):
            super().reduce_exemplar_set(strategy)
            share, extra = divmod(self.memory_size, len(self.x_memory))
            for rank in range(len(self.x_memory)):
                # order holds each kept exemplar's herding rank (1 = chosen first)
                keep = torch.nonzero(self.order[rank] <= share + (rank < extra)).flatten()
                self.x_memory[rank] = self.x_memory[rank][keep]
                self.y_memory[rank] = self.y_memory[rank][: len(keep)]
                self.order[rank] = self.order[rank][keep]

        def compute_class_means(self, strategy):
            if self.flip:
                return super().compute_class_means(strategy)
            if not self.class_means:
                n_classes = sum(strategy.experience.benchmark.n_classes_per_exp)
                self.class_means = {c: torch.zeros(self.embedding_size, device=strategy.device)
                                    for c in range(n_classes)}
            with torch.no_grad():
                for x, y in zip(self.x_memory, self.y_memory):
                    features = strategy.model.feature_extractor(x.to(strategy.device))
                    mean = (features / features.norm(dim=1, keepdim=True)).mean(0)
                    self.class_means[y[0]] = mean / mean.norm()
            strategy.model.eval_classifier.replace_class_means_dict(self.class_means)

    return BudgetICaRLPlugin


def build(ctx):
    from avalanche.training.supervised import ICaRL
    from avalanche.training.supervised.icarl import _ICaRLPlugin

    features = ctx.features()
    classifier = nn.Linear(features.out_features, ctx.split.n_classes)
    params = list(features.parameters()) + list(classifier.parameters())
    strategy = ctx.template(cls=ICaRL, replay=False, feature_extractor=features, classifier=classifier,
                            optimizer=ctx.make_optimizer(params), memory_size=ctx.memory,
                            buffer_transform=None, fixed_memory=True)
    # ICaRL builds its plugin inside; swap it (still empty) for the budgeted one
    strategy.plugins = [_plugin_class()(ctx.memory, ctx.params["flip_means"])
                        if type(p) is _ICaRLPlugin else p for p in strategy.plugins]
    return strategy
