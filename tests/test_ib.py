"""The IB sparse method (strategies/ib/) on small synthetic tasks: freezing, sparsity, growth, NCM."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from bench.models import BackboneSpec, Layer
from bench.scenarios import Split
from bench.strategy import StrategyContext
from strategies import ib
from strategies.ib.network import IBNet
from strategies._ncm import hidden_features
from strategies.ib.plugin import IBPlugin

MLP = BackboneSpec("tiny-mlp", (1, 8, 8), (Layer("linear", 16), Layer("linear", 16)))
CONV = BackboneSpec("tiny-conv", (1, 8, 8), (Layer("conv", 6, pool=True), Layer("linear", 16)))
# what makes a few channels go inactive within a few dozen steps
SPARSE = {"gamma": 0.02, "gate_lr": 0.05, "sigma_init": 0.3}


def images(n_classes: int, per_class: int, seed: int, shape=(1, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images: a fixed random prototype per class blended with noise (train and test share prototypes)."""
    protos = torch.rand(n_classes, *shape, generator=torch.Generator().manual_seed(1234)) * 255
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    noise = torch.rand(len(y), *shape, generator=g) * 255
    return (0.5 * protos[y] + 0.5 * noise).round().clamp(0, 255).to(torch.uint8), y


def benchmark(task_il: bool, n_tasks: int = 3, per_class: int = 128):
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )

    n = 2 * n_tasks
    x, y = images(n, per_class, seed=1)
    xt, yt = images(n, 32, seed=2)
    return nc_benchmark(tensor_dataset(x, y), tensor_dataset(xt, yt), n_experiences=n_tasks,
                        task_labels=task_il, shuffle=False, fixed_class_order=list(range(n)),
                        class_ids_from_zero_in_each_exp=task_il)


def context(task_il: bool, optimizer: dict | None = None, memory: int = 0, epochs: int = 4) -> StrategyContext:
    return StrategyContext(dataset="mnist", scenario="task-il" if task_il else "class-il",
                           split=Split(((0, 1), (2, 3), (4, 5))), memory=memory, epochs=epochs,
                           batch_size=32, eval_batch_size=256,
                           optimizer=optimizer or {"name": "adam", "lr": 0.01})


def strategy_for(spec: BackboneSpec, task_il: bool, params: dict, optimizer: dict | None = None,
                 memory: int = 0, epochs: int = 4, before: tuple = ()):
    """What ib.build does, for a custom spec: (strategy, plugin, accuracy plugin)."""
    from bench.cell import AccuracyPlugin
    from bench.memory import ClassBalancedReplay

    torch.manual_seed(0)
    ctx = context(task_il, optimizer, memory, epochs)
    model, plugin = ib.build_parts(spec, task_il, params)
    accuracy = AccuracyPlugin()
    strategy = ctx.template(plugins=[*before, plugin, accuracy], model=model)
    plugin.memory = next((p for p in strategy.plugins if isinstance(p, ClassBalancedReplay)), None)
    return strategy, plugin, accuracy


def test_x(bench, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    from bench.strategy import materialize

    x, y, t = materialize(bench.test_stream[k].dataset)
    return x, y


test_x.__test__ = False  # a helper, not a test


def outputs(model, x: torch.Tensor, task: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(last hidden layer features, head output) in eval mode."""
    model.eval()
    with torch.no_grad():
        out = model(x, task) if task is not None else model(x)
        return model.last_features.clone(), out.clone()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}
ADAM = {"name": "adam", "lr": 0.01, "weight_decay": 0.01}
# gamma that leaves part of the channels active on this problem under Adam
ADAM_GAMMA = {"mlp": 0.005, "conv": 0.001}


def silence_half():
    """A plugin that, just before IBPlugin decides, switches off every other free channel.

    Under SGD the gates of this tiny problem move too little in a few dozen steps to
    leave some channels inactive; this makes the active/inactive split that the
    freezing tests need, whatever the optimizer."""
    from avalanche.core import SupervisedPlugin

    class SilenceHalf(SupervisedPlugin):
        def after_training_exp(self, strategy, **kwargs):
            with torch.no_grad():
                for g in strategy.model.features.layers:
                    free = torch.nonzero(~g.frozen).flatten()[::2]
                    g.log_sigma[free] = g.mu[free].abs().log() + 1.0

    return SilenceHalf()


@pytest.fixture(scope="module", params=[("mlp", "sgd"), ("mlp", "adam"), ("conv", "sgd"), ("conv", "adam")],
                ids=lambda p: "-".join(p))
def task_il_run(request):
    """Three Task-IL tasks; what the model computed and held after task 1, and after tasks 2 and 3."""
    spec = MLP if request.param[0] == "mlp" else CONV
    optimizer = SGD if request.param[1] == "sgd" else ADAM
    bench = benchmark(task_il=True)
    if request.param[1] == "sgd":
        params, before = {"gamma": 0.0, "sigma_init": 0.3}, (silence_half(),)
    else:
        params, before = {**SPARSE, "gamma": ADAM_GAMMA[request.param[0]]}, ()
    strategy, plugin, accuracy = strategy_for(spec, True, params, optimizer, before=before)
    x1, _ = test_x(bench, 0)
    run = {"plugin": plugin, "model": strategy.model, "after": []}
    for k, experience in enumerate(bench.train_stream):
        strategy.train(experience)
        accuracy.accuracy.clear()
        strategy.eval(bench.test_stream[: k + 1])
        run["after"].append({
            "outputs": outputs(strategy.model, x1, 0),
            "params": snapshot(strategy.model),
            "frozen": [g.frozen.clone() for g in strategy.model.features.layers],
            "accuracy": dict(accuracy.accuracy),
        })
    return run


def test_task_il_no_drift(task_il_run):
    first = task_il_run["after"][0]
    active = first["frozen"][-1]
    spatial = task_il_run["model"].features.spatial[-1]
    cols = active.repeat_interleave(spatial)
    # the test means something only if some channels were left for later tasks, and taken
    assert any(0 < int(f.sum()) < f.numel() for f in first["frozen"])
    assert sum(int(f.sum()) for f in task_il_run["after"][-1]["frozen"]) > sum(int(f.sum()) for f in first["frozen"])
    for later in task_il_run["after"][1:]:
        assert torch.equal(later["outputs"][0][:, cols], first["outputs"][0][:, cols])
        assert torch.equal(later["outputs"][1], first["outputs"][1])
        assert later["accuracy"][0] == first["accuracy"][0]
    assert first["accuracy"][0] > 0.6  # learned something (silencing half the channels costs some)


def test_frozen_and_zero_weights_stay(task_il_run):
    model = task_il_run["model"]
    feats = model.features
    for before, after in zip(task_il_run["after"], task_il_run["after"][1:]):
        for i, (rows, gated) in enumerate(zip(before["frozen"], feats.layers)):
            name = f"features.layers.{i}"
            w0, w1 = before["params"][f"{name}.layer.weight"], after["params"][f"{name}.layer.weight"]
            w1 = w1[tuple(slice(0, n) for n in w0.shape)]  # layers may have grown since
            assert torch.equal(w1[rows], w0[rows])
            for p in ("layer.bias", "mu", "log_sigma"):
                assert torch.equal(after["params"][f"{name}.{p}"][: len(rows)][rows],
                                   before["params"][f"{name}.{p}"][rows])
            if i > 0:  # weights from inactive channels into active ones are exactly 0
                cols = ~feats.input_mask(i, before["frozen"][i - 1])
                assert bool((w1[rows][:, cols] == 0).all())
        for name in before["params"]:
            if name.startswith("heads.0."):
                w0 = before["params"][name]
                assert torch.equal(after["params"][name][tuple(slice(0, n) for n in w0.shape)], w0)
        head_cols = ~feats.input_mask(len(feats.layers), before["frozen"][-1])
        assert bool((after["params"]["heads.0.weight"][:, : len(head_cols)][:, head_cols] == 0).all())


def train_one_task(spec: BackboneSpec, params: dict, epochs: int = 6, per_class: int = 128):
    bench = benchmark(task_il=True, n_tasks=1, per_class=per_class)
    strategy, plugin, _ = strategy_for(spec, True, params, epochs=epochs)
    strategy.train(bench.train_stream[0])
    return strategy, plugin


def test_gamma_leaves_fewer_channels_active():
    _, dense = train_one_task(MLP, {**SPARSE, "gamma": 0.0})
    _, sparse = train_one_task(MLP, SPARSE)
    n_dense, n_sparse = sum(dense.task_report()["active"]), sum(sparse.task_report()["active"])
    assert n_sparse < n_dense
    assert n_dense > 0.8 * sum(dense.task_report()["widths"])


def tolerance(width: int) -> float:
    return max(1.0, 0.03 * width)


@pytest.mark.parametrize("epochs", [1, 4])
def test_rate_reached_at_any_length(epochs):
    """The adaptive gamma alone (default constants, nothing capped) brings each layer to the rate.

    ~90 steps per epoch at batch 32, as a Split-MNIST task has at batch 128."""
    spec = BackboneSpec("wide", (1, 8, 8), (Layer("linear", 100), Layer("linear", 100)))
    params = {"rate": 0.2, "cap": False, "gate_lr": 0.01, "sigma_init": 0.5}
    _, plugin = train_one_task(spec, params, epochs=epochs, per_class=1440)
    report = plugin.task_report()
    assert report["capped"] == [0, 0]
    for active, width in zip(report["active"], report["widths"]):
        assert abs(active - 20) <= tolerance(width), report


def test_revive_resets_gamma_and_sigma():
    from strategies.ib.gamma import AdaptiveGamma
    from strategies.ib.network import GatedLayer

    gated = GatedLayer(torch.nn.Linear(4, 6), mu_init=1.0, sigma_init=0.5)
    with torch.no_grad():  # every channel gone (ratio^2 < 1), channel 0 frozen
        gated.mu.copy_(torch.tensor([1.0, 0.9, 0.8, 0.2, 0.1, 0.05]))
        gated.since[0] = 0
    gamma = AdaptiveGamma([gated], [2], threshold=1.0, start=1e-3, up=2.0, down=0.5, floor=1e-6,
                          ceiling=1.0, every=3)
    for _ in range(2):
        gamma.step()
    assert torch.equal(gated.log_sigma, torch.full((6,), math.log(0.5)))  # not yet: every 3 steps
    with torch.no_grad():
        gated.log_sigma.fill_(0.0)  # sigma 1
    gamma.step()
    # the two best free channels should stay but are gone: gamma to the floor, sigma to its start
    torch.testing.assert_close(gated.log_sigma.exp(), torch.tensor([1.0, 0.5, 0.5, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(gamma.gamma[0], torch.tensor([0.0, 1e-6, 1e-6, 1e-3, 1e-3, 1e-3]),
                               rtol=1e-5, atol=0.0)
    assert gamma.revived == 2
    with torch.no_grad():  # now channels 1 and 2 are there (ratio^2 = 3.24, 2.56) and 3 is there too
        gated.mu[3] = 1.0
        gated.log_sigma[3] = math.log(0.5)
    for _ in range(3):
        gamma.step()
    # channel 3 ranks first now (2 > 1.8 > 1.6): 3 and 1 stay and are there (down; 1 held at the floor),
    # 2 should go and is there (up), 4 and 5 should go and are gone (unchanged)
    torch.testing.assert_close(gamma.gamma[0], torch.tensor([0.0, 1e-6, 2e-6, 5e-4, 1e-3, 1e-3]),
                               rtol=1e-5, atol=0.0)
    penalty = gamma.penalty()
    expected = (gamma.gamma[0] * torch.log1p((gated.mu / gated.log_sigma.exp()) ** 2)).sum()
    torch.testing.assert_close(penalty, expected)


def test_test_time_gate_threshold_rule():
    """At test time a channel passes mu exactly when (mu/sigma)^2 >= threshold, and 0 otherwise."""
    from strategies.ib.network import GatedLayer

    torch.manual_seed(0)
    gated = GatedLayer(torch.nn.Linear(5, 4), mu_init=1.0, sigma_init=1.0)
    with torch.no_grad():
        gated.layer.bias.fill_(5.0)  # every ReLU output positive
        # (mu/sigma)^2 = 1.5 (log(1 + 1.5) = 0.92 < 1), 0.8, 4, 1.0
        gated.mu.copy_(torch.tensor([1.5 ** 0.5, 0.8 ** 0.5, 2.0, 1.0]))
    gated.eval()
    x = torch.randn(7, 5)
    out = gated(x, threshold=1.0, frozen_noise=False)
    z = torch.relu(gated.layer(x))
    assert bool((z > 0).all())
    assert bool((out[:, 1] == 0).all())
    torch.testing.assert_close(out[:, [0, 2, 3]], z[:, [0, 2, 3]] * gated.mu[[0, 2, 3]])


def test_full_layer_grows_and_keeps_old_tasks():
    bench = benchmark(task_il=True)
    strategy, plugin, accuracy = strategy_for(MLP, True, {"gamma": 0.0, "grow": 5, "sigma_init": 0.1})
    x1, _ = test_x(bench, 0)
    strategy.train(bench.train_stream[0])
    strategy.eval(bench.test_stream[:1])
    report = plugin.task_report()
    assert report["active"] == report["widths"] == [16, 16]
    assert report["grown"] == [0, 0]
    model = strategy.model
    assert model.features.widths == [16, 16]  # full, but no channels for a task that may never come
    feats1, out1 = outputs(model, x1, 0)
    acc1 = accuracy.accuracy[0]
    from avalanche.core import SupervisedPlugin

    class OptimizerCheck(SupervisedPlugin):
        seen: list[bool] = []
        grown_w: list[torch.Tensor] = []

        def before_training_exp(self, strategy, **kwargs):
            self.grown_w.append(strategy.model.features.layers[0].layer.weight.detach().clone())

        def after_training_iteration(self, strategy, **kwargs):
            in_optimizer = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}
            self.seen.append(all(id(p) in in_optimizer for p in strategy.model.parameters()))

    check = OptimizerCheck()
    strategy.plugins.append(check)
    strategy.train(bench.train_stream[1])
    # grown when task 2 arrived, before the optimizer was made: it trained the new channels
    assert plugin.task_report()["grown"] == [5, 5] and plugin.task_report()["grew_share"] == 1.0
    assert model.features.widths == [21, 21] and model.heads["0"].in_features == 21
    assert check.seen and all(check.seen)
    assert check.grown_w[0].shape[0] == 21
    assert not torch.equal(model.features.layers[0].layer.weight[16:21], check.grown_w[0][16:])
    accuracy.accuracy.clear()
    strategy.eval(bench.test_stream[:2])
    assert accuracy.accuracy[0] == acc1 and accuracy.accuracy[1] > 0.75
    feats2, out2 = outputs(model, x1, 0)
    # a wider matrix product may sum in another order: equal up to rounding
    torch.testing.assert_close(feats2[:, :16], feats1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out2, out1, rtol=1e-6, atol=1e-6)
    assert torch.equal(out2.argmax(1), out1.argmax(1))


class SpyMemory:
    """Delegates to the shared memory and records what the plugin read from it."""

    def __init__(self, memory):
        self.memory, self.read = memory, []

    def __len__(self):
        return len(self.memory)

    def tensors(self):
        out = self.memory.tensors()
        self.read.append(out)
        return out


def test_class_il_predicts_nearest_class_mean():
    from bench.strategy import materialize

    bench = benchmark(task_il=False, n_tasks=2)
    strategy, plugin, accuracy = strategy_for(MLP, False, {**SPARSE, "gamma": 0.005}, memory=20)
    spy = plugin.memory = SpyMemory(plugin.memory)
    for experience in bench.train_stream:
        strategy.train(experience)
    assert len(spy.read) == 2  # after each task, once the memory has taken that task's exemplars
    model = strategy.model
    # class means from scratch: the last task's data and the memory as updated after it
    x, y, _ = materialize(bench.train_stream[1].dataset.eval())
    xm, ym, _ = spy.read[-1]
    assert sorted(ym.tolist()) == sorted([0, 1, 2, 3] * 5)
    xa, ya = torch.cat([x, xm]), torch.cat([y, ym])
    fa = hidden_features(model.features, xa, 256)
    means = torch.stack([fa[ya == c].mean(0) for c in range(4)])
    torch.testing.assert_close(torch.stack([plugin.class_means[c] for c in range(4)]), means)

    captured = []

    class Capture(type(accuracy)):
        def after_eval_iteration(self, strategy, **kwargs):
            captured.append((strategy.model.last_features.clone(), strategy.mb_output.clone()))

    strategy.plugins.append(Capture())
    strategy.eval(bench.test_stream)
    for feats, scores in captured:
        nearest = torch.cdist(feats, means).argmin(1)
        assert torch.equal(scores.argmax(1), nearest)
    accuracy.accuracy.clear()
    strategy.eval(bench.test_stream)
    assert min(accuracy.accuracy.values()) > 0.6


def test_class_il_kept_means_compared_on_their_channels():
    """ncm_means="kept": a class's mean is taken once, on the channels active after its task."""
    from bench.strategy import materialize

    bench = benchmark(task_il=False, n_tasks=2)
    params = {"rate": 0.25, "gate_lr": 0.05, "sigma_init": 0.3, "ncm_means": "kept"}
    strategy, plugin, accuracy = strategy_for(MLP, False, params, memory=0)
    strategy.train(bench.train_stream[0])
    model = strategy.model
    x, y, _ = materialize(bench.train_stream[0].dataset.eval())
    f = hidden_features(model.features, x, 256)
    first = {c: f[y == c].mean(0) for c in (0, 1)}
    mask0 = model.features.layers[-1].frozen.clone()
    for c in (0, 1):
        torch.testing.assert_close(plugin.class_means[c], first[c])
        assert torch.equal(plugin.class_masks[c], mask0)
    strategy.train(bench.train_stream[1])
    width = model.features.out_features
    mask1 = model.features.layers[-1].frozen
    assert int(mask1.sum()) > int(mask0.sum())  # task 2 took channels of its own
    for c in (0, 1):  # kept as they were (zero on channels added since)
        assert torch.equal(plugin.class_means[c][: len(first[c])], first[c])
        assert torch.equal(plugin.class_masks[c][: len(mask0)], mask0)
        assert not bool(plugin.class_masks[c][len(mask0):].any())
    assert torch.equal(plugin.class_masks[2], mask1)
    # scores: mean squared distance over each class's channels, each in units of its spread (the
    # default ncm_scale), or plain
    feats = torch.randn(5, width)
    scaled = plugin.ncm_scores(feats)
    plugin.ncm_scale = False
    plain = plugin.ncm_scores(feats)
    plugin.ncm_scale = True
    for c in range(4):
        m, spread = plugin.class_masks[c], plugin.class_spreads[c]
        diff = feats[:, m] - plugin.class_means[c][m]
        torch.testing.assert_close(scaled[:, c], -((diff / spread[m]) ** 2).mean(1))
        torch.testing.assert_close(plain[:, c], -(diff ** 2).mean(1))
    assert torch.equal(plugin.class_spreads[0], plugin.class_spreads[1])  # one spread per task
    strategy.eval(bench.test_stream)
    assert min(accuracy.accuracy.values()) > 0.6


def test_class_il_output_layer_trains():
    bench = benchmark(task_il=False, n_tasks=2)
    strategy, plugin, _ = strategy_for(MLP, False, {"rate": 0.25, "gate_lr": 0.05, "sigma_init": 0.3}, memory=20)
    strategy.train(bench.train_stream[0])
    head = strategy.model.head.weight.detach().clone()
    strategy.train(bench.train_stream[1])
    after = strategy.model.head.weight.detach()
    assert not torch.equal(after[:2, : head.shape[1]], head[:2])  # old classes' rows keep learning
    assert after[2:].abs().sum() > 0


@pytest.mark.parametrize("head_reset", [True, False])
def test_class_il_output_layer_restarts_each_task(head_reset):
    """head_reset (reference I (c.2)): the single-head output layer starts each later task afresh,
    old classes' rows included; without it the old rows carry over."""
    from avalanche.core import SupervisedPlugin

    bench = benchmark(task_il=False, n_tasks=2)
    params = {"rate": 0.25, "gate_lr": 0.05, "sigma_init": 0.3, "head_reset": head_reset}
    strategy, plugin, _ = strategy_for(MLP, False, params, memory=20)
    strategy.train(bench.train_stream[0])
    trained = strategy.model.head.weight.detach().clone()
    at_start = []

    class FirstStep(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kwargs):
            if not at_start:
                at_start.append(strategy.model.head.weight.detach().clone())

    strategy.plugins.append(FirstStep())
    strategy.train(bench.train_stream[1])
    start = at_start[0]
    assert start.shape[0] == 4  # widened for the new classes
    old_rows = start[:2, : trained.shape[1]]
    if head_reset:
        assert not torch.isclose(old_rows, trained).any()
        # the default nn.Linear init: uniform within 1/sqrt(fan_in)
        assert bool((start.abs() <= 1 / math.sqrt(start.shape[1])).all())
    else:
        assert torch.equal(old_rows, trained)


def test_reinitialised_channels_start_with_fresh_optimizer_state():
    from avalanche.core import SupervisedPlugin

    bench = benchmark(task_il=True, n_tasks=2, per_class=32)
    strategy, plugin, _ = strategy_for(MLP, True, {"rate": 0.25, "gate_lr": 0.05, "sigma_init": 0.3}, ADAM)
    strategy.train(bench.train_stream[0])
    weight = strategy.model.features.layers[0].layer.weight
    assert bool(strategy.optimizer.state[weight]["exp_avg"].abs().sum() > 0)
    free = ~strategy.model.features.layers[0].frozen
    seen = []

    class FirstStep(SupervisedPlugin):
        def before_update(self, strategy, **kwargs):
            if not seen:  # the first step of task 2, before Adam has touched anything
                state = strategy.optimizer.state.get(strategy.model.features.layers[0].layer.weight, {})
                seen.append(state.get("exp_avg", torch.zeros(1))[free].abs().sum().item()
                            if "exp_avg" in state else 0.0)

    strategy.plugins.append(FirstStep())
    strategy.train(bench.train_stream[1])
    assert seen == [0.0]


def test_task_il_no_drift_while_the_last_layer_grows():
    bench = benchmark(task_il=True)
    # rate 0.4 of 16: 6 channels per task: the last layer grows when fewer than 6 are left
    strategy, plugin, accuracy = strategy_for(MLP, True, {"rate": 0.4, "gate_lr": 0.05, "sigma_init": 0.3})
    x1, _ = test_x(bench, 0)
    strategy.train(bench.train_stream[0])
    strategy.eval(bench.test_stream[:1])
    acc1 = accuracy.accuracy[0]
    feats1, out1 = outputs(strategy.model, x1, 0)
    cols = strategy.model.features.layers[-1].frozen.clone()
    for k in (1, 2):
        strategy.train(bench.train_stream[k])
        accuracy.accuracy.clear()
        strategy.eval(bench.test_stream[: k + 1])
        feats, out = outputs(strategy.model, x1, 0)
        torch.testing.assert_close(feats[:, : len(cols)][:, cols], feats1[:, cols], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out, out1, rtol=1e-6, atol=1e-6)
        assert accuracy.accuracy[0] == acc1
    assert any(r["grown"][-1] > 0 for r in plugin.reports)  # checked after the growth, too
    assert strategy.model.features.widths[-1] > 16


def test_plugin_with_plain_naive():
    from avalanche.training import Naive

    bench = benchmark(task_il=True, n_tasks=2, per_class=32)
    torch.manual_seed(0)
    model = IBNet(CONV, multi_head=True, sigma_init=0.3)
    plugin = IBPlugin(gamma=0.02, gate_lr=0.05)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=2,
                     eval_mb_size=64, plugins=[plugin], evaluator=None)
    x1, _ = test_x(bench, 0)
    strategy.train(bench.train_stream[0])
    frozen = model.features.layers[-1].frozen.clone()
    cols = frozen.repeat_interleave(model.features.spatial[-1])
    before = outputs(model, x1, 0)
    strategy.train(bench.train_stream[1])
    strategy.eval(bench.test_stream)
    after = outputs(model, x1, 0)
    assert torch.equal(after[0][:, : len(cols)][:, cols], before[0][:, cols])
    torch.testing.assert_close(after[1], before[1], rtol=1e-6, atol=1e-6)  # exact unless a layer grew
    assert len(plugin.reports) == 2 and set(plugin.task_report()) == {
        "active", "widths", "grown", "grew_share", "capped", "params", "sparsity", "gamma", "train_s"}
    assert plugin.task_report()["gamma"] == 0.02  # no rate: the one global gamma


def test_build_from_context_and_unsupported_backbones():
    ctx = StrategyContext(dataset="mnist", scenario="class-il", split=Split(((0, 1), (2, 3))), memory=10,
                          epochs=1, batch_size=32, eval_batch_size=64, optimizer={"name": "adam", "lr": 1e-3},
                          params={"gamma": 1e-4})
    strategy = ib.build(ctx)
    assert strategy.model.features.widths == [400, 400]
    assert strategy.plugins[0].memory is not None
    assert ib.unsupported("cifar10", "task-il", 0, "resnet18")
    assert ib.unsupported("mnist", "task-il", 0, None) is None
    with pytest.raises(ValueError):
        ib.build(copy.replace(ctx, params={"gama": 1.0}) if hasattr(copy, "replace") else
                 StrategyContext(**{**vars(ctx), "params": {"gama": 1.0}}))


def dense_features(feats, x: torch.Tensor) -> torch.Tensor:
    """Every channel of every layer through GatedLayer.forward: what the two-part forward must equal."""
    from bench.models import after_layer, before_layer

    h = feats.preprocess(x)
    for i, gated in enumerate(feats.layers):
        h = after_layer(feats.spec, i, gated(before_layer(feats.spec, i, h), feats.threshold, feats.frozen_noise))
    return h


def half_frozen(spec: BackboneSpec, seed: int = 0):
    """Features with about half the channels frozen after task 0 and a quarter after task 1 (their
    weights from unfrozen channels 0, as after a task), the free ones nearly noiseless; one frozen
    gate is negative."""
    torch.manual_seed(seed)
    feats = IBNet(spec, multi_head=True).features
    with torch.no_grad():
        for i, gated in enumerate(feats.layers):
            since = torch.randint(0, 4, (gated.width,))  # 0, 1: frozen after that task; 2, 3: free
            since[:2] = torch.tensor([0, 2])
            gated.since = torch.where(since < 2, since, torch.full_like(since, -1))
            if i > 0:
                prev = feats.layers[i - 1]
                for task in (0, 1):  # a channel frozen after `task` reads nothing frozen later
                    rows = gated.frozen & (gated.since <= task)
                    cols = ~feats.input_mask(i, prev.frozen & (prev.since <= task))
                    gated.layer.weight[rows.view(-1, 1) & cols.view(1, -1)] = 0.0
            gated.log_sigma[~gated.frozen] = -20.0
        # a negative gate (the first layer's channel 0, frozen after task 0) cannot be folded into
        # the weights: that layer takes the other path
        feats.layers[0].mu[0] = -0.5
    return feats


@pytest.mark.parametrize("spec", [MLP, CONV])
def test_two_part_forward_equals_dense(spec):
    """Frozen channels as a compact network without gradients, free ones read everything: the
    same features and the same gradients for the free channels as the dense forward; the free
    rows' weights train as tensors of their own and go back into the layers at the task's end."""
    feats = half_frozen(spec)
    x = images(2, 8, seed=3)[0]
    feats.train()
    dense = dense_features(feats, x)
    dense.square().sum().backward()
    want = {n: p.grad.clone() for n, p in feats.named_parameters()}
    feats.zero_grad(set_to_none=True)
    before = [g.layer.weight.detach().clone() for g in feats.layers]
    trained = feats.begin_task()
    parts = feats(x)
    torch.testing.assert_close(parts, dense, rtol=1e-5, atol=1e-6)
    parts.square().sum().backward()
    for i, (gated, split) in enumerate(zip(feats.layers, feats._split)):
        assert gated.layer.weight.grad is None  # the whole weight is out of the graph
        free_rows = want[f"layers.{i}.layer.weight"][~gated.frozen]
        for cols, w in zip(split.parts, split.weights):
            torch.testing.assert_close(w.grad, free_rows if cols is None else free_rows[:, cols], rtol=1e-4, atol=1e-6)
        for name in ("layer.bias", "mu"):
            got = dict(feats.named_parameters())[f"layers.{i}.{name}"].grad
            torch.testing.assert_close(got[~gated.frozen], want[f"layers.{i}.{name}"][~gated.frozen],
                                       rtol=1e-4, atol=1e-6)
            assert bool((got[gated.frozen] == 0).all())  # no gradient through the frozen part
    with torch.no_grad():
        for w in trained:  # what an optimizer step does to them
            w.add_(1.0)
    feats.end_task()
    for gated, weight in zip(feats.layers, before):
        assert gated.layer.weight.requires_grad
        assert torch.equal(gated.layer.weight[gated.frozen], weight[gated.frozen])
        assert torch.equal(gated.layer.weight[~gated.frozen], weight[~gated.frozen] + 1.0)
    feats.eval()
    with torch.no_grad():
        for gated in feats.layers:  # some free channels inactive at test time
            gated.log_sigma[~gated.frozen & (torch.arange(gated.width) % 2 == 0)] = 5.0
        full = feats(x)
        torch.testing.assert_close(full, dense_features(feats, x), rtol=1e-5, atol=1e-6)
        # a head frozen after task 0 reads only the channels frozen by then: the same values there
        first = feats(x, upto=0)
        cols = feats.input_mask(len(feats.layers), feats.layers[-1].frozen & (feats.layers[-1].since == 0))
        assert bool(cols.any()) and not bool(cols.all())
        torch.testing.assert_close(first[:, cols], full[:, cols], rtol=1e-5, atol=1e-6)
        assert bool((first[:, ~cols] == 0).all())


def test_task_il_outputs_of_a_smaller_head_are_not_beaten_by_padding():
    """Avalanche pads a smaller head's outputs with zeros up to the largest head, and a zero beats
    logits that are all negative; an IB head's prediction must be one of its own classes."""
    model = IBNet(MLP, multi_head=True)
    for task, classes in ((0, 2), (1, 5)):
        model.heads[str(task)] = torch.nn.Linear(model.features.out_features, classes)
        model.known_train_tasks_labels.add(task)
        model.max_class_label = max(model.max_class_label, classes)
    with torch.no_grad():
        model.heads["0"].weight.zero_()
        model.heads["0"].bias.fill_(-5.0)  # every logit of task 0 negative
    model.eval()
    x = images(2, 4, seed=5)[0]
    with torch.no_grad():
        out = model(x, torch.zeros(len(x), dtype=torch.long))
    assert bool((out.argmax(1) < 2).all())


def test_gate_noise_keeps_the_maps_shape_and_layout():
    from strategies.ib.network import _noise_like

    torch.manual_seed(0)
    for z in (torch.zeros(16, 8, 12, 12).contiguous(memory_format=torch.channels_last), torch.zeros(16, 8, 12, 12),
              torch.zeros(2048, 8)):
        eps = _noise_like(z)
        assert eps.shape == z.shape and eps.stride() == z.stride()
        assert abs(float(eps.mean())) < 0.05 and abs(float(eps.std()) - 1.0) < 0.05
        # independent across channels and positions (a map made of repeated draws is not)
        flat = eps.permute(1, 0, *range(2, eps.dim())).reshape(eps.shape[1], -1)
        assert float(torch.corrcoef(flat).fill_diagonal_(0).abs().max()) < 0.1


def test_ib_grows_a_layer_only_when_none_of_its_channels_is_free():
    """The reference's rule (global gamma, no rate): a layer with a free channel left does not grow."""
    bench = benchmark(task_il=True)
    strategy, plugin, _ = strategy_for(MLP, True, {**SPARSE, "grow": 5})
    strategy.train(bench.train_stream[0])
    report = plugin.task_report()
    assert all(a < w for a, w in zip(report["active"], report["widths"]))  # free channels in every layer
    strategy.train(bench.train_stream[1])
    assert plugin.task_report()["grown"] == [0, 0] and plugin.task_report()["grew_share"] == 0.0
    assert strategy.model.features.widths == [16, 16]


def test_scaled_kept_means_measure_each_channel_in_units_of_its_spread():
    """ncm_scale: a channel on which a class's task hardly varied no longer looks close to everything."""
    plugin = IBPlugin(ncm_means="kept", ncm_scale=False)
    plugin.class_means = {0: torch.tensor([0.0, 0.0]), 1: torch.tensor([0.0, 1.0])}
    plugin.class_masks = {0: torch.tensor([True, False]), 1: torch.tensor([False, True])}
    plugin.class_spreads = {0: torch.tensor([0.01, 1.0]), 1: torch.tensor([1.0, 10.0])}
    sample = torch.tensor([[0.5, 2.0]])  # 50 spreads from class 0's mean, 0.1 from class 1's
    assert int(plugin.ncm_scores(sample).argmax()) == 0  # unscaled: 0.25 against 1.0
    plugin.ncm_scale = True
    assert int(plugin.ncm_scores(sample).argmax()) == 1


def test_pooled_spread_averages_the_classes_variances_on_the_compared_channels():
    from strategies._ncm import pooled_spread

    feats = torch.tensor([[0.0, 5.0, 1.0], [2.0, 5.0, 1.0], [10.0, 5.0, 1.0], [14.0, 5.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    spread = pooled_spread(feats, y, torch.tensor([True, True, False]))
    # channel 0: variances 1 and 4 -> sqrt(2.5); channel 1 never varies: floored at 1% of the mean
    # spread on the compared channels; channel 2 is not compared: 1
    assert spread[0].item() == pytest.approx(2.5 ** 0.5)
    assert spread[1].item() == pytest.approx(0.01 * (2.5 ** 0.5) / 2)
    assert spread[2].item() == 1.0
