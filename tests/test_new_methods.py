"""The mechanisms of SI, MAS, A-GEM, GDumb and BiC (their end-to-end cells are in test_strategies), and the
faults of Avalanche's own SI and BiC plugins that the suite's versions fix (so an upgrade is noticed)."""
import pytest
import torch
from test_strategies import tiny_config

from bench import registry
from bench.cell import seed_everything
from bench.datasets import load_dataset
from bench.scenarios import build_benchmark, task_split
from bench.strategy import StrategyContext


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from fakedata import make_data_root

    return make_data_root(tmp_path_factory.mktemp("new-methods"), ("mnist",),
                          mnist={"n_train_per_class": 12, "n_test_per_class": 4})


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


def built(root, scenario, strategy, memory=0, **params):
    """(strategy, its method plugin, the train stream) as a cell builds them."""
    config = tiny_config("mnist", scenario, strategy, memory=memory)
    config["params"].update(params)
    seed_everything(0, 1)
    data = load_dataset("mnist", str(root), download=False)
    info = registry.get(strategy)
    ctx = StrategyContext(dataset="mnist", scenario=scenario, split=task_split(data), memory=config["memory"],
                          epochs=1, batch_size=8, eval_batch_size=64, optimizer=config["optimizer"],
                          params=config["params"], backbone=config["backbone"], memory_kind=info.memory)
    strategy_ = info.build(ctx)
    return strategy_, strategy_.plugins[0], build_benchmark(data, scenario)


# --- SI

def test_si_importances_are_positive_and_the_anchor_is_a_copy(root):
    strategy, plugin, bench = built(root, "task-il", "si", si_lambda=100.0)
    penalties = []

    class Spy:  # after SI's before_backward: the penalty it has just added, as the loss holds it
        def before_backward(self, strategy_, **kwargs):
            penalties.append(float(plugin.compute_ewc_loss(strategy_.model, plugin.ewc_data,
                                                           plugin.excluded_parameters, "cpu", lambd=100.0)))

    strategy.plugins.append(Spy())
    for experience in bench.train_stream[:2]:
        strategy.train(experience)
    importance = torch.cat([p.data for p in plugin.ewc_data[1].values()])
    assert (importance >= 0).all() and (importance > 0).sum() > 100
    assert importance.max() > 0.001  # not Avalanche's upper clip
    anchors = plugin.ewc_data[0]
    for name, param in strategy.model.named_parameters():
        if name in anchors:
            assert anchors[name].data.data_ptr() != param.data_ptr()
    steps = len(penalties) // 2
    assert max(penalties[:steps]) == 0 and max(penalties[steps:]) > 0  # task 2's weights are pulled back


def test_avalanche_si_still_stores_views_of_the_live_weights():
    """Avalanche 0.6's SI snapshots are views on the CPU (strategies/si.py works around it). When this
    fails, Avalanche has fixed it: strategies/si.py's snapshot fix may be dropped, and its docstring updated."""
    from avalanche.training.plugins import SynapticIntelligencePlugin as Upstream

    model = torch.nn.Linear(3, 2)
    ewc_data, syn_data = ({}, {}), {k: {} for k in ("old_theta", "new_theta", "grad", "trajectory",
                                                     "cum_trajectory")}
    Upstream.create_syn_data(model, ewc_data, syn_data, set())
    Upstream.extract_weights(model, syn_data["old_theta"], set())
    with torch.no_grad():
        model.weight += 1.0
    assert torch.equal(syn_data["old_theta"]["weight"].data, model.weight.detach().flatten())  # moved along


def test_avalanche_si_leaves_negative_importances():
    """Avalanche 0.6 clips importances from above only; strategies/si.py clips at 0 from below too."""
    from avalanche.training.plugins import SynapticIntelligencePlugin as Upstream

    model = torch.nn.Linear(3, 2, bias=False)
    ewc_data, syn_data = ({}, {}), {k: {} for k in ("old_theta", "new_theta", "grad", "trajectory",
                                                     "cum_trajectory")}
    Upstream.create_syn_data(model, ewc_data, syn_data, set())
    ewc_data[0]["weight"].data = torch.zeros(6)
    syn_data["trajectory"]["weight"].data = torch.ones(6)  # gradient along the step: the loss rose
    Upstream.update_ewc_data(model, ewc_data, syn_data, 0.001, set(), 1)
    assert (ewc_data[1]["weight"].data < 0).all()


# --- MAS

def test_mas_importances_and_penalty_are_not_zero(root):
    strategy, plugin, bench = built(root, "task-il", "mas")
    penalties = []

    class Spy:  # the penalty MAS adds in task 2, from its importances and anchors
        def before_backward(self, strategy_, **kwargs):
            if plugin.importance:
                penalties.append(sum(float((plugin.importance[n].data * (p - plugin.params[n].data) ** 2).sum())
                                     for n, p in strategy_.model.named_parameters() if n in plugin.importance
                                     and plugin.importance[n].data.shape == p.shape))

    strategy.plugins.append(Spy())
    for experience in bench.train_stream[:2]:
        strategy.train(experience)
    assert sum(float(p.data.abs().sum()) for p in plugin.importance.values()) > 0
    assert penalties and max(penalties) > 0


# --- A-GEM

def test_agem_fills_the_budget_from_the_first_task_and_projects(root, monkeypatch):
    strategy, plugin, bench = built(root, "class-il", "agem", memory=20, sample_size=16)
    projected = []
    original = type(plugin).after_backward

    def spy(self, strategy_, **kwargs):
        if self.buffers:
            grads = torch.cat([p.grad.flatten() for p in strategy_.model.parameters() if p.grad is not None])
            before = float(grads @ self.reference_gradients[: len(grads)]) if \
                len(self.reference_gradients) == len(grads) else 0.0
            original(self, strategy_, **kwargs)
            after = torch.cat([p.grad.flatten() for p in strategy_.model.parameters() if p.grad is not None])
            if before < 0:
                projected.append(float(after @ self.reference_gradients))
        else:
            original(self, strategy_, **kwargs)

    monkeypatch.setattr(type(plugin), "after_backward", spy)
    held = []
    for experience in bench.train_stream:
        strategy.train(experience)
        held.append(plugin.exemplars_held())
    assert held[0] == 20 and max(held) <= 20
    assert projected, "no step's gradient was projected"
    assert all(dot > -1e-4 for dot in projected)  # after projection: not against the exemplars' gradient


# --- GDumb

def test_gdumb_memory_is_greedy_and_class_balanced():
    from strategies.gdumb import GreedyMemory

    memory = GreedyMemory(20, seed=0)
    for task in range(5):
        y = torch.tensor([2 * task] * 12 + [2 * task + 1] * 12)
        memory.add(torch.zeros(24, 1), y, torch.zeros(24, dtype=torch.long))
        counts = [len(v) for v in memory.by_class.values()]
        assert memory.exemplars_held() == 20 and max(counts) - min(counts) <= 1


def test_gdumb_retrains_from_scratch_on_the_memory_only(root):
    strategy, plugin, bench = built(root, "class-il", "gdumb", memory=20, memory_epochs=2)
    strategy.train(bench.train_stream[0])
    trained = [p.detach().clone() for p in strategy.model.parameters()]
    strategy.experience = bench.train_stream[1]
    strategy.optimizer.state[next(strategy.model.parameters())]["step"] = 1  # some optimizer state
    plugin.before_training_exp(strategy)
    assert all(not torch.equal(a, b) for a, b in zip(trained, strategy.model.parameters()) if a.numel() > 1)
    assert not strategy.optimizer.state
    assert len(strategy.dataloader.tensors[0]) == plugin.exemplars_held() == 20


# --- BiC

def test_bic_fits_a_bias_layer_distills_and_keeps_the_budget(root):
    strategy, plugin, bench = built(root, "class-il", "bic", memory=20, bias_epochs=20, val_fraction=0.1)
    held = []
    for i, experience in enumerate(bench.train_stream[:3]):
        strategy.train(experience)
        held.append(plugin.exemplars_held())
    assert max(held) <= 20 and plugin.validation.exemplars_held() == 2
    assert plugin.last_distillation > 0
    bias = plugin.bias
    assert bias is not None and sorted(bias.clss.tolist()) == [4, 5]
    assert float(bias.alpha) != 1.0 or float(bias.beta) != 0.0
    logits = torch.zeros(3, 6)
    strategy.mb_output = logits.clone()
    plugin.after_eval_forward(strategy)
    assert not torch.equal(strategy.mb_output[:, 4:], logits[:, 4:]) and torch.equal(strategy.mb_output[:, :4],
                                                                                   logits[:, :4])


def test_avalanche_bic_distillation_takes_the_softmax_over_the_batch():
    """Avalanche 0.6's BiC softmaxes the teacher's logits over dim 0 (the batch) at temperature 2,
    whatever T is; strategies/bic takes it over classes. When this fails, Avalanche has changed it."""
    import torch.nn.functional as F
    from avalanche.training.plugins import BiCPlugin

    new, old = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), \
        torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    upstream = BiCPlugin(mem_size=10, T=5).cross_entropy(new, old)
    over_batch = F.cross_entropy(new / 2, F.softmax(old / 2, dim=0))
    over_classes = F.cross_entropy(new / 5, F.softmax(old / 5, dim=1))
    assert torch.allclose(upstream, over_batch) and not torch.allclose(upstream, over_classes)
