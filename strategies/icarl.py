"""iCaRL (Rebuffi et al. 2017), Avalanche's ICaRL: herding exemplars of the same budget, nearest-mean prediction."""
from torch import nn

SCENARIOS = ("class-il",)
MEMORY = "own"


def invalid(memory, n_classes):
    if memory < n_classes:
        return f"icarl needs at least one exemplar per class: --memory {memory} < {n_classes} classes"
    return None


def build(ctx):
    from avalanche.training.supervised import ICaRL

    features = ctx.features()
    classifier = nn.Linear(features.out_features, ctx.split.n_classes)
    params = list(features.parameters()) + list(classifier.parameters())
    # Avalanche keeps ceil(memory / classes seen) exemplars per class, which can exceed
    # the budget by up to (classes - 1) samples when the division is not exact.
    return ctx.template(cls=ICaRL, replay=False, feature_extractor=features, classifier=classifier,
                        optimizer=ctx.make_optimizer(params), memory_size=ctx.memory,
                        buffer_transform=None, fixed_memory=True)
