"""The matched replay memory: class balance, its budget, and seeded choices."""
import torch
from avalanche.benchmarks.utils.classification_dataset import (
    _make_taskaware_tensor_classification_dataset as tensor_dataset,
)

from bench.memory import ClassBalancedReplay, ReplayBatches
from bench.strategy import TensorBatches


class FakeStrategy:
    """Just what the memory reads after an experience."""

    def __init__(self, x, y, task):
        self.experience = type("Exp", (), {"dataset": tensor_dataset(x, y, task_labels=task)})()


def experience(classes, per_class, task=0, offset=0):
    y = torch.tensor([c for c in classes for _ in range(per_class)])
    x = (torch.arange(len(y)) + offset).to(torch.uint8).view(-1, 1, 1, 1)
    return FakeStrategy(x, y, task)


def counts(memory):
    _, y, t = memory.tensors()
    return {key: int(((t == key[0]) & (y == key[1])).sum()) for key in sorted(set(zip(t.tolist(), y.tolist())))}


def test_budget_is_split_evenly_over_classes_seen():
    memory = ClassBalancedReplay(10, seed=0)
    memory.after_training_exp(experience([0, 1], 20))
    assert counts(memory) == {(0, 0): 5, (0, 1): 5}
    memory.after_training_exp(experience([2, 3, 4], 20))
    assert counts(memory) == {(0, 0): 2, (0, 1): 2, (0, 2): 2, (0, 3): 2, (0, 4): 2}
    memory.after_training_exp(experience([5, 6], 20))
    # 10 over 7 classes: the first three get the remainder
    assert sorted(counts(memory).values(), reverse=True) == [2, 2, 2, 1, 1, 1, 1]
    assert len(memory) == 10


def test_task_il_classes_with_the_same_id_are_kept_apart():
    memory = ClassBalancedReplay(8, seed=0)
    memory.after_training_exp(experience([0, 1], 10, task=0))
    memory.after_training_exp(experience([0, 1], 10, task=1))
    assert counts(memory) == {(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 2}


def test_the_seed_fixes_which_samples_are_kept():
    def kept(seed):
        memory = ClassBalancedReplay(6, seed=seed)
        memory.after_training_exp(experience([0, 1, 2], 30))
        return memory.tensors()[0].flatten().tolist()

    assert kept(1) == kept(1)
    assert kept(1) != kept(2)


def test_shrinking_keeps_a_subset_of_what_was_stored():
    memory = ClassBalancedReplay(12, seed=0)
    memory.after_training_exp(experience([0, 1], 30))
    before = set(memory.tensors()[0].flatten().tolist())
    memory.after_training_exp(experience([2, 3], 30, offset=100))
    x, y, _ = memory.tensors()
    assert set(x[y < 2].flatten().tolist()) <= before


def test_each_minibatch_is_joined_by_as_many_memory_samples():
    memory = [torch.full((4, 1), 7), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)]
    data = TensorBatches([torch.arange(10).view(-1, 1), torch.ones(10, dtype=torch.long),
                          torch.ones(10, dtype=torch.long)], batch_size=4, shuffle=False)
    batches = list(ReplayBatches(data, memory, torch.Generator().manual_seed(0)))
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    assert all((b[0][len(b[0]) // 2:] == 7).all() for b in batches)
