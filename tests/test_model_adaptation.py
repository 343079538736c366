"""The templates' model adaptation: adapted as Avalanche adapts, moved only when a tensor is elsewhere."""
import pytest
import torch
from fakedata import make_data_root

from bench import registry
from bench.datasets import load_dataset
from bench.scenarios import build_benchmark, task_split
from bench.strategy import StrategyContext


@pytest.fixture
def built(tmp_path, monkeypatch):
    """A Task-IL stream of the tiny Omniglot and a builder of a strategy on it."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    data = load_dataset("omniglot", make_data_root(tmp_path, ("omniglot",)), download=False)
    ctx = StrategyContext(dataset="omniglot", scenario="task-il", split=task_split(data), memory=0, epochs=1,
                          batch_size=8, eval_batch_size=64, optimizer={"name": "adam", "lr": 1e-3}, seed=0)
    return build_benchmark(data, "task-il"), lambda name: registry.get(name).build(ctx)


def count_moves(model: torch.nn.Module) -> list[int]:
    moves: list[int] = []
    move = model.to
    model.to = lambda *a, **k: moves.append(1) or move(*a, **k)  # an instance attribute: this model only
    return moves


def test_evaluation_leaves_a_model_on_its_device_where_it_is(built):
    """Avalanche's batch templates call `model.to` before each evaluated experience; ours do not
    when every tensor is on the device already (the heads added in training included)."""
    stream, build = built
    strategy = build("naive")
    strategy.train(stream.train_stream[0])
    strategy.train(stream.train_stream[1])
    moves = count_moves(strategy.model)
    strategy.eval(stream.test_stream[:2])
    assert moves == []
    assert len(strategy.model.classifier.classifiers) >= 2  # the heads were added and evaluated


def test_a_model_with_a_tensor_elsewhere_is_moved(built):
    stream, build = built
    strategy = build("naive")
    strategy.experience = stream.train_stream[0]
    strategy.device = torch.device("meta")  # a device no tensor is on yet (no copy is made to it)
    model = strategy.model_adaptation()
    assert {t.device.type for t in (*model.parameters(), *model.buffers())} == {"meta"}


def test_joint_training_keeps_its_own_adaptation(built, monkeypatch):
    """JointTraining adapts the model to every experience at once; the fast path must not replace it."""
    from avalanche.training.supervised.joint_training import JointTraining

    stream, build = built
    calls = []
    monkeypatch.setattr(JointTraining, "model_adaptation", lambda self, model=None: calls.append(1) or self.model)
    strategy = build("joint")
    strategy.experience = stream.train_stream[0]
    strategy.model_adaptation()
    assert calls == [1]
