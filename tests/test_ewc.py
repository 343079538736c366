"""EWC's folded penalty against Avalanche's separate penalties, its constant state, and its two Fisher estimates."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from test_baselines import trained

from bench import models
from bench.cell import tensor_bytes


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from fakedata import make_data_root

    return make_data_root(tmp_path_factory.mktemp("ewc"), ("mnist",),
                          mnist={"n_train_per_class": 12, "n_test_per_class": 4})


def with_avalanche_watching(strategy):
    """Avalanche's EWCPlugin in separate mode riding along (weight 0: it only records its penalties)."""
    from avalanche.training.plugins import EWCPlugin

    oracle = EWCPlugin(ewc_lambda=0.0, mode="separate")
    strategy.plugins.insert(0, oracle)  # before the template's clock, as a plugin given to the template is
    return oracle


@pytest.mark.parametrize("scenario", ["class-il", "task-il"])
def test_folded_penalty_has_the_gradient_of_avalanches_separate_penalties(root, scenario, monkeypatch):
    """Five tasks (a head that grows in Class-IL, new heads in Task-IL): at weights away from every
    anchor, the folded quadratic's value and gradient equal the sum of Avalanche's per-task ones."""
    from bench.strategy import StrategyContext

    oracles = []
    original = StrategyContext.template

    def template(self, *args, **kwargs):
        strategy = original(self, *args, **kwargs)
        oracles.append(with_avalanche_watching(strategy))
        return strategy

    monkeypatch.setattr("bench.strategy.StrategyContext.template", template)
    from strategies.ewc import FoldedEWC

    strategy, _, _ = trained(root, scenario, "ewc", memory=0)
    oracle = oracles[0]
    plugin = next(p for p in strategy.plugins if isinstance(p, FoldedEWC))
    model = strategy.model
    assert len(oracle.saved_params) == 5
    torch.manual_seed(1)
    with torch.no_grad():  # somewhere none of the anchors is
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))

    plugin.lam = 1.0
    model.zero_grad(set_to_none=True)
    mine = plugin.add_gradient(model)
    grads = [p.grad for p in model.parameters()]
    oracle.ewc_lambda = 1.0
    probe = SimpleNamespace(clock=SimpleNamespace(train_exp_counter=5), model=model, device="cpu",
                            loss=torch.zeros(()))
    oracle.before_backward(probe)
    expected = torch.autograd.grad(probe.loss, list(model.parameters()), allow_unused=True)

    assert mine.item() == pytest.approx(probe.loss.item(), rel=1e-5)
    for (name, _), g, e in zip(model.named_parameters(), grads, expected):
        if e is None:
            assert g is None or not g.any(), name
            continue
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-6 * e.abs().max().item()), name


def test_extra_state_is_two_copies_of_the_network_whatever_the_number_of_tasks(root):
    """After every task: one summed Fisher and one anchor per parameter, not one pair per task."""
    from bench import registry
    from bench.cell import seed_everything
    from bench.datasets import load_dataset
    from bench.scenarios import build_benchmark, task_split
    from bench.strategy import StrategyContext
    from test_strategies import tiny_config

    config = tiny_config("mnist", "class-il", "ewc", memory=0)
    seed_everything(0, 1)
    data = load_dataset("mnist", str(root), download=False)
    ctx = StrategyContext(dataset="mnist", scenario="class-il", split=task_split(data), memory=0, epochs=1,
                          batch_size=8, eval_batch_size=64, optimizer=config["optimizer"],
                          params=config["params"], backbone=config["backbone"])
    strategy = registry.get("ewc").build(ctx)
    plugin = strategy.plugins[0]
    held = []
    for experience in build_benchmark(data, "class-il").train_stream:
        strategy.train(experience)
        network = sum(p.numel() * p.element_size() for p in strategy.model.parameters())
        held.append((tensor_bytes(plugin), 2 * network))
    assert all(state == expected for state, expected in held), held


def test_online_mode_keeps_the_latest_anchor_and_a_decayed_fisher():
    from strategies.ewc import FoldedEWC

    plugin = FoldedEWC(1.0, mode="online", decay_factor=0.5)
    plugin.add_task({"w": torch.tensor([2.0, 0.0])}, {"w": torch.tensor([1.0, 1.0])})
    plugin.add_task({"w": torch.tensor([1.0, 3.0, 4.0])}, {"w": torch.tensor([5.0, 6.0, 7.0])})  # grown
    assert torch.equal(plugin.importance["w"], torch.tensor([2.0, 3.0, 4.0]))
    assert torch.equal(plugin.anchor["w"], torch.tensor([5.0, 6.0, 7.0]))


def conv_task_net():
    from bench.heads import TaskILNet

    torch.manual_seed(0)
    net = TaskILNet(models.build_features("omniglot"))
    for m in net.modules():  # every unit live: the untrained head masks none
        if hasattr(m, "masking"):
            m.masking = False
    return net.eval()


def test_per_sample_fisher_is_the_mean_of_each_samples_squared_gradient():
    """On a convolutional task-routed network, against one backward pass per sample."""
    from avalanche.models.utils import avalanche_forward

    from strategies._fisher import minibatch_fisher, per_sample_fisher

    net = conv_task_net()
    x = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    y, t = torch.randint(0, 2, (10,)), torch.zeros(10, dtype=torch.long)
    batches = [[x[:6], y[:6], t[:6]], [x[6:], y[6:], t[6:]]]
    fisher = per_sample_fisher(net, batches, chunk=4)
    params = dict(net.named_parameters())
    expected = {name: torch.zeros_like(p) for name, p in params.items()}
    for i in range(10):
        loss = F.cross_entropy(avalanche_forward(net, x[i:i + 1], t[i:i + 1]), y[i:i + 1])
        for (name, _), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
            expected[name] += g ** 2 / 10
    for name in params:
        assert torch.allclose(fisher[name], expected[name], rtol=1e-4, atol=1e-9), name
    # the minibatch estimate squares the mean gradient: smaller, as the docstring says
    minibatch = minibatch_fisher(net, batches)
    assert sum(f.sum() for f in minibatch.values()) < sum(f.sum() for f in fisher.values())


@pytest.mark.parametrize("fisher", ["minibatch", "per_sample"])
def test_ewc_cell_runs_with_either_fisher(root, fisher):
    from bench.cell import run_cell
    from test_strategies import check_record, tiny_config

    config = tiny_config("mnist", "task-il", "ewc")
    config["params"]["fisher"] = fisher
    record = run_cell(config, str(root), threads=1, progress=False)
    check_record(record, 5)
    assert record["config"]["params"]["fisher"] == fisher
