"""The controls of issue 30: replay_ncm, the width multiplier and the rows at IB's size, PackNet, HAT,
and the control lines under a table (their end-to-end cells are in test_strategies)."""
from types import SimpleNamespace

import pytest
import torch
from test_report import make_record
from test_strategies import tiny_config

from bench import models, registry
from bench.cell import run_cell, seed_everything
from bench.controls import control_lines
from bench.datasets import load_dataset
from bench.scenarios import build_benchmark, task_split
from bench.strategy import StrategyContext
from bench.summary import seed_frame, summary_frame


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from fakedata import make_data_root

    return make_data_root(tmp_path_factory.mktemp("controls"), ("mnist",),
                          mnist={"n_train_per_class": 12, "n_test_per_class": 4})


def built(root, scenario, strategy, memory=None, epochs=1, **params):
    """(strategy, benchmark): `strategy` built on the tiny MNIST, not trained; `params` override its settings."""
    config = tiny_config("mnist", scenario, strategy, memory=memory, epochs=epochs)
    seed_everything(0, 1)
    data = load_dataset("mnist", str(root), download=False)
    ctx = StrategyContext(dataset="mnist", scenario=scenario, split=task_split(data), memory=config["memory"],
                          epochs=epochs, batch_size=8, eval_batch_size=64, optimizer=config["optimizer"],
                          params={**config["params"], **params}, backbone=config["backbone"])
    return registry.get(strategy).build(ctx), build_benchmark(data, scenario)


class Outputs:
    """Records what the strategy predicts for each evaluation batch (a plugin)."""

    def __init__(self):
        self.x, self.predicted = [], []

    def after_eval_iteration(self, strategy, **kwargs):
        self.x.append(strategy.mb_x.detach().clone())
        self.predicted.append(strategy.mb_output.argmax(1))


# --- replay_ncm

def test_replay_ncm_predicts_by_the_nearest_class_mean_where_the_head_disagrees(root):
    strategy, bench = built(root, "class-il", "replay_ncm", memory=20)
    plugin = next(p for p in strategy.plugins if type(p).__name__ == "NearestMean")
    for experience in bench.train_stream[:2]:
        strategy.train(experience)
    head = strategy.model.classifier.classifier
    with torch.no_grad():  # a head that says class 0 for every image
        head.weight.zero_()
        head.bias.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0]))
    outputs = Outputs()
    strategy.plugins.append(outputs)
    strategy.eval(bench.test_stream[:2])
    x, predicted = torch.cat(outputs.x), torch.cat(outputs.predicted)
    strategy.model.eval()
    with torch.no_grad():
        features = torch.nn.functional.normalize(strategy.model.features(x), dim=1)  # mnist: cosine, as IB
        means = torch.stack([plugin.means[c] for c in range(4)])
    nearest = torch.cdist(features, means).argmin(1)
    assert (nearest != 0).any()  # the head and the nearest mean disagree on these images
    assert torch.equal(predicted, nearest)


def test_replay_ncm_means_are_taken_from_the_task_data_and_the_memory(root):
    strategy, bench = built(root, "class-il", "replay_ncm", memory=20, normalize=False)
    plugin = next(p for p in strategy.plugins if type(p).__name__ == "NearestMean")
    for experience in bench.train_stream[:2]:
        strategy.train(experience)
    from bench.strategy import materialize

    x, y = materialize(bench.train_stream[1].dataset.eval())[:2]
    stored = plugin.memory.tensors()
    x, y = torch.cat([x, stored[0]]), torch.cat([y, stored[1]])
    strategy.model.eval()
    with torch.no_grad():
        features = strategy.model.features(x)
    for c in range(4):  # classes of task 0 from their exemplars, of task 1 from data and exemplars
        assert torch.allclose(plugin.means[c], features[y == c].mean(0), atol=1e-5)


# --- width multiplier and the rows at IB's size

def _count(spec) -> int:
    """Parameters of a spec's hidden layers, from its widths alone."""
    c, h, w = spec.in_shape
    total = 0
    for layer in spec.layers:
        if layer.kind == "conv":
            total += c * layer.width * 9 + layer.width
            c = layer.width
            h, w = (h // 2, w // 2) if layer.pool else (h, w)
        else:
            total += c * h * w * layer.width + layer.width
            c, h, w = layer.width, 1, 1
    return total


@pytest.mark.parametrize("name", list(models.BACKBONES))
def test_width_multiplier_widens_every_hidden_layer_and_the_count_follows(name):
    spec = models.BACKBONES[name]
    wide = models.widened(spec, 2.5)
    assert [layer.width for layer in wide.layers] == [round(2.5 * layer.width) for layer in spec.layers]
    assert [layer.kind for layer in wide.layers] == [layer.kind for layer in spec.layers]
    dataset = next(d for d, b in models.DEFAULT_BACKBONE.items() if b == name) if name != "vgg16" else "cifar10"
    features = models.build_features(dataset, name, width=2.5)
    assert models.count_params(features) == _count(wide) > _count(spec)
    assert features.out_features == wide.out_features


def test_a_row_at_ib_size_trains_the_widened_backbone_with_the_base_strategy(root):
    config = tiny_config("mnist", "class-il", "naive_at_ib_size")
    assert config["params"]["width"] == 2.5  # declared by the protocol
    record = run_cell(config, str(root), threads=1, progress=False)
    wide = models.widened(models.BACKBONES["mlp"], 2.5)
    assert record["params"] == _count(wide) + (wide.out_features + 1) * 10
    assert record["extra_state_bytes"] == (record["params"] - 478_410) * 4  # the widening counts


def test_a_row_at_ib_size_runs_only_where_the_protocol_declares_the_size(root):
    info = registry.get("lwf_at_ib_size")
    assert "declares no IB size" in info.why_not("mnist", "task-il", 0)
    assert info.why_not("cifar10", "task-il", 0) is None
    config = tiny_config("mnist", "task-il", "lwf_at_ib_size")
    config["params"]["width"] = 1.5
    record = run_cell(config, str(root), threads=1, progress=False)
    assert record["status"] == "ok"
    assert record["params"] == _count(models.widened(models.BACKBONES["mlp"], 1.5)) + 601 * 10


# --- PackNet

def _packnet_layers(strategy):
    from strategies.packnet import _packnet_layers

    return _packnet_layers(strategy.model.features)


def test_packnet_prunes_the_setting_and_keeps_earlier_tasks_weights_bit_identical(root):
    strategy, bench = built(root, "task-il", "packnet", epochs=2, prune=0.6, retrain_epochs=1)
    strategy.train(bench.train_stream[0])
    for layer in _packnet_layers(strategy):
        n = layer.task_index.numel()
        released = int((layer.task_index == 1).sum())
        assert released == int(n * 0.6)  # the pruned fraction is the setting, per layer
        assert bool((layer.wrappee.weight[layer.task_index == 1] == 0).all())
    kept = [(layer.wrappee.weight[layer.task_index == 0].clone(), layer.wrappee.bias.clone())
            for layer in _packnet_layers(strategy)]
    head = [p.clone() for p in strategy.model.classifier.classifiers["0"].parameters()]
    strategy.train(bench.train_stream[1])
    for layer, (weights, bias) in zip(_packnet_layers(strategy), kept):
        assert torch.equal(layer.wrappee.weight[layer.task_index == 0], weights)
        assert torch.equal(layer.wrappee.bias, bias)
        free = int((layer.task_index == 1).sum()) + int((layer.task_index == 2).sum())
        assert int((layer.task_index == 2).sum()) == int(free * 0.6)  # of task 1's weights
    assert all(torch.equal(a, b) for a, b in zip(head, strategy.model.classifier.classifiers["0"].parameters()))


def test_packnet_task_uses_only_its_own_and_earlier_tasks_weights(root):
    strategy, bench = built(root, "task-il", "packnet", epochs=2, prune=0.5, retrain_epochs=1)
    for experience in bench.train_stream[:2]:
        strategy.train(experience)
    model = strategy.model.eval()
    x = torch.randint(0, 255, (6, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        before = [model.forward_single_task(x, t) for t in (0, 1)]
        for layer in _packnet_layers(strategy):  # scramble every weight a later task may own
            later = layer.task_index >= 1
            layer.wrappee.weight[later] = torch.randn(int(later.sum()))
        after = [model.forward_single_task(x, t) for t in (0, 1)]
    assert torch.equal(before[0], after[0])
    assert not torch.equal(before[1], after[1])  # task 1 does read its own weights


# --- HAT

def hat_features(smax=400.0, n_tasks=3, name="convnet28"):
    from strategies.hat import HATFeatures

    torch.manual_seed(0)
    return HATFeatures(models.BACKBONES[name], n_tasks, smax)


def test_hat_scales_the_gradient_of_units_used_before_by_one_minus_their_cumulative_attention():
    from strategies.hat import HATPlugin

    feats = hat_features()
    for cum in feats.cumulative():
        cum.copy_(torch.rand(cum.shape))
    feats.task, feats.s = 1, 5.0
    x = torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8)
    feats(x).square().sum().backward()
    raw = [(layer.weight.grad.clone(), layer.bias.grad.clone()) for layer in feats.layers]
    plugin = HATPlugin(c=0.0)
    plugin.factors = feats.compensation()
    plugin.before_update(SimpleNamespace(model=SimpleNamespace(features=feats, parameters=feats.parameters)))
    cum = feats.cumulative()
    for i, layer in enumerate(feats.layers):
        out_att = cum[i]
        if i == 0:
            pair = out_att.view(-1, 1).expand(layer.weight.shape[:2])
        else:  # input unit j of a layer reading a flattened map belongs to channel j // (h * w)
            per_channel = layer.weight.shape[1] // cum[i - 1].numel()
            in_att = cum[i - 1][torch.arange(layer.weight.shape[1]) // per_channel]
            pair = torch.minimum(out_att.view(-1, 1), in_att.view(1, -1))
        factor = (1 - pair).reshape(*pair.shape, *([1] * (layer.weight.dim() - 2)))
        assert torch.allclose(layer.weight.grad, raw[i][0] * factor, rtol=1e-5, atol=1e-12)
        assert torch.allclose(layer.bias.grad, raw[i][1] * (1 - out_att), rtol=1e-5, atol=1e-12)


def test_hat_regularisation_term_is_added_to_the_loss():
    from strategies.hat import HATPlugin

    feats = hat_features(name="mlp")
    for cum in feats.cumulative():
        cum.copy_(torch.rand(cum.shape))
    feats.task, feats.s = 2, 3.0
    feats(torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.uint8))
    gates = [torch.sigmoid(3.0 * e[2]) for e in feats.embeddings]
    cum = feats.cumulative()
    expected = sum((g * (1 - c)).sum() for g, c in zip(gates, cum)) / sum((1 - c).sum() for c in cum)
    strategy = SimpleNamespace(loss=torch.tensor(1.0), model=SimpleNamespace(features=feats))
    HATPlugin(c=0.5).before_backward(strategy)
    assert torch.allclose(strategy.loss, 1.0 + 0.5 * expected)


def test_hat_keeps_earlier_tasks_embeddings_and_accumulates_attention(root):
    strategy, bench = built(root, "task-il", "hat", epochs=1)
    feats = strategy.model.features
    strategy.train(bench.train_stream[0])
    first = [e[0].detach().clone() for e in feats.embeddings]
    cum_first = [c.clone() for c in feats.cumulative()]
    assert all(torch.equal(c, torch.sigmoid(feats.smax * e)) for c, e in zip(cum_first, first))
    second = [e[1].detach().clone() for e in feats.embeddings]
    strategy.train(bench.train_stream[1])
    assert all(torch.equal(e[0], f) for e, f in zip(feats.embeddings, first))
    assert any(not torch.equal(e[1], s) for e, s in zip(feats.embeddings, second))  # task 1's did learn
    for c, c0, e in zip(feats.cumulative(), cum_first, feats.embeddings):
        assert torch.equal(c, torch.maximum(c0, torch.sigmoid(feats.smax * e[1].detach())))


# --- the control lines under a table

def test_one_control_line_per_control_row_with_the_paired_interval():
    ib = [0.90, 0.91, 0.92]
    rows = {"replay_ncm": [0.89, 0.89, 0.90], "naive_at_ib_size": [0.20, 0.21, 0.19],
            "packnet": [0.50, 0.51, 0.52], "er_ace": [0.80, 0.81, 0.82]}
    records = [make_record("ib", s, a) for s, a in enumerate(ib)]
    for name, accs in rows.items():
        records += [make_record(name, s, a) for s, a in enumerate(accs)]
    for r in records:
        r["params"] = 1000 if r["config"]["strategy"] != "packnet" else 200
    for r in records:
        if r["config"]["strategy"] == "naive_at_ib_size":
            r["config"]["params"] = {"width": 2.5}
    rows_frame, seeds = summary_frame(records), seed_frame(records)
    lines = control_lines(rows_frame, seeds, records)
    assert len(lines) == 3  # er_ace is not a control
    by_name = {line.split(" (control")[0].removeprefix("IB against "): line for line in lines}
    assert set(by_name) == {"replay_ncm", "naive_at_ib_size", "packnet"}
    # replay_ncm: differences 1, 2, 2 points: mean 1.67, t(2) half-width 4.303 * 0.577 / sqrt(3) = 1.43
    assert "difference +1.67 points, 95% interval [+0.23, +3.10] (paired t over seeds 0, 1, 2)" \
        in by_name["replay_ncm"]
    assert "IB higher beyond seed noise" in by_name["replay_ncm"]
    assert "width x2.5, 1,000 parameters (1.00x IB's)" in by_name["naive_at_ib_size"]


def test_each_ib_row_gets_its_control_lines_and_a_size_row_only_the_ib_row_of_its_size():
    records = [make_record("ib", s, a) for s, a in enumerate([0.88, 0.89, 0.87])]
    records += [make_record("ib_rate", s, a) for s, a in enumerate([0.90, 0.91, 0.92])]
    records += [make_record("replay_ncm", s, a) for s, a in enumerate([0.89, 0.89, 0.90])]
    records += [make_record("replay_at_ib_size", s, a) for s, a in enumerate([0.75, 0.76, 0.74])]
    for r in records:  # ib at the backbone's size, ib_rate and the widened replay at 4x it
        r["params"] = 1000 if r["config"]["strategy"] in ("ib", "replay_ncm") else 4000
    lines = control_lines(summary_frame(records), seed_frame(records), records)
    heads = sorted(line.split(" (control")[0] for line in lines)
    # named by their table labels (with a memory, "+ replay")
    assert heads == ["IB (ib + replay) against replay_ncm", "IB (ib_rate + replay) against replay_at_ib_size",
                     "IB (ib_rate + replay) against replay_ncm"]


def test_a_row_not_at_ib_size_in_this_table_gets_no_control_line():
    records = [make_record("ib", s, 0.6) for s in range(2)] + [make_record("naive_at_ib_size", s, 0.2)
                                                                 for s in range(2)]
    for r in records:
        r["params"] = 1000 if r["config"]["strategy"] == "ib" else 1200  # 20% larger: not IB's size
    assert control_lines(summary_frame(records), seed_frame(records), records) == []
