"""GDumb (Prabhu et al. 2020): a greedy class-balanced memory, and a network trained from scratch on it alone.

The memory takes the stream's samples one by one (in a random order fixed by the
seed): a sample joins while the memory has room, or, once it is full, when its
class holds fewer than budget / classes-seen samples, in which case a random
sample of the largest class leaves (the paper's greedy sampler). Before each
evaluation, that is after each task here, the network is re-initialised, the
optimizer's state cleared, and it is trained on the memory only, for
`memory_epochs` epochs with the protocol's optimizer and batch size.

Not Avalanche's GDumbPlugin: its memory is Avalanche's ClassBalancedBuffer
(random per class, not the greedy sampler, and per task in multi-task streams,
which would exceed the one budget in Task-IL), it restarts the network by
swapping in a deep copy of the first one, which leaves the optimizer holding the
old parameters' state, and it reads the memory through a per-sample loader.
`memory_epochs` replaces the protocol's epochs: those count passes over a task's
thousands of samples, and as many passes over a memory of 200 would be a few
steps. The paper's cutmix and SGD with warm restarts are not used.
"""
from bench.settings import Setting

SCENARIOS = ("class-il", "task-il")
MEMORY = "own"
SETTINGS = {"memory_epochs": Setting(30, low=1, help="epochs over the memory after each task")}


def unsupported(dataset, scenario, memory, backbone):
    return None if memory > 0 else "gdumb trains on its memory alone and needs a memory budget (--memory > 0)"


class GreedyMemory:
    """At most `size` samples, kept class-balanced by the greedy sampler; classes keyed by (task, class)."""

    def __init__(self, size: int, seed: int = 0):
        import torch

        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.by_class: dict[tuple[int, int], list] = {}  # (task, class) -> list of (x, y, t) samples

    def exemplars_held(self) -> int:
        return sum(len(v) for v in self.by_class.values())

    def add(self, x, y, t) -> None:
        import torch

        for i in torch.randperm(len(y), generator=self.generator).tolist():
            key = (int(t[i]), int(y[i]))
            samples = self.by_class.setdefault(key, [])
            if self.exemplars_held() >= self.size:
                if len(samples) >= self.size // len(self.by_class):
                    continue
                largest = max(self.by_class.values(), key=len)
                largest.pop(int(torch.randint(len(largest), (1,), generator=self.generator)))
            samples.append((x[i], y[i], t[i]))
        self.by_class = {k: v for k, v in self.by_class.items() if v}

    def tensors(self):
        import torch

        samples = [s for key in sorted(self.by_class) for s in self.by_class[key]]
        return [torch.stack([s[i] for s in samples]) for i in range(3)]


class RetrainOnMemory:
    """The greedy memory, and training from scratch on it before each evaluation (an Avalanche plugin)."""

    def __init__(self, size: int, seed: int = 0):
        self.memory = GreedyMemory(size, seed=seed)

    def exemplars_held(self) -> int:
        return self.memory.exemplars_held()

    def before_training_exp(self, strategy, **kwargs):
        from bench.batches import TensorBatches, materialize

        self.memory.add(*materialize(strategy.experience.dataset.eval())[:3])
        for module in strategy.model.modules():  # from scratch: a fresh draw from the cell's seeded RNG
            if module is not strategy.model and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        strategy.optimizer.state.clear()
        strategy.dataloader = TensorBatches(self.memory.tensors(), strategy.train_mb_size, True,
                                            strategy.data_generator)


def build(ctx):
    from dataclasses import replace

    plugin = RetrainOnMemory(ctx.memory, seed=ctx.seed)
    return replace(ctx, epochs=ctx.params["memory_epochs"]).template(plugins=[plugin], replay=False)
