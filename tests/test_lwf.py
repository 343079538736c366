"""LwF in Task-IL at one student backbone pass: the same distillation loss and gradients as Avalanche's."""
import types

import pytest
import torch
from fakedata import make_data_root

from bench import registry
from bench.datasets import load_dataset
from bench.scenarios import build_benchmark, task_split
from bench.strategy import StrategyContext


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """The LwF strategy after two Omniglot Task-IL tasks (heads of different sizes), and the third task's images."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    data = load_dataset("omniglot", make_data_root(tmp_path, ("omniglot",)), download=False)
    split = task_split(data)
    stream = build_benchmark(data, "task-il")
    ctx = StrategyContext(dataset="omniglot", scenario="task-il", split=split, memory=0, epochs=1, batch_size=8,
                          eval_batch_size=64, optimizer={"name": "adam", "lr": 1e-3},
                          params={"alpha": 3.0, "temperature": 2.0}, seed=0)
    strategy = registry.get("lwf").build(ctx)
    for experience in stream.train_stream[:2]:
        strategy.train(experience)
    plugin = next(p for p in strategy.plugins if hasattr(p, "lwf"))
    x = torch.randint(0, 256, (5, *ctx.spec.in_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return strategy, plugin, x


def test_one_pass_distillation_equals_avalanches(trained):
    strategy, plugin, x = trained
    model = strategy.model
    model.train()
    with torch.no_grad():  # the student moved away from the teacher (a copy of it after task 2)
        generator = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    assert sorted(plugin.lwf.prev_classes_by_task) == [0, 1]
    # the fake alphabets all have two characters: one seen unit for task 0 exercises the padding
    # of heads of different sizes (Avalanche's penalty below reads the same units)
    plugin.lwf.prev_classes_by_task[0] = {1}

    calls = []
    counter = model.features.register_forward_hook(lambda *_: calls.append(1))
    plugin.before_training_exp(strategy)
    plugin.before_training_iteration(strategy)
    out = model(x, 1)  # the training forward (its head is irrelevant to the distillation)
    state = types.SimpleNamespace(mb_x=x, mb_output=out, model=model, loss=torch.zeros(()))
    plugin.before_backward(state)
    ours = state.loss
    assert len(calls) == 1  # the student's backbone ran once: in the training forward only
    grads = torch.autograd.grad(ours, list(model.features.parameters()))
    plugin.hook.remove()
    counter.remove()

    reference = plugin.lwf.alpha * plugin.lwf._lwf_penalty(out, x, model)  # Avalanche's: a second forward
    expected = torch.autograd.grad(reference, list(model.features.parameters()))
    assert float(reference) > 0
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-7)
    for a, b in zip(grads, expected):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
