"""The mechanisms of the added baselines: P&C, SupportNet, DER++, ER-ACE (their end-to-end cells are in
test_strategies)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from test_strategies import tiny_config

from bench import models, registry
from bench.cell import run_cell, seed_everything
from bench.datasets import load_dataset
from bench.scenarios import build_benchmark, task_split
from bench.strategy import StrategyContext


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


def trained(root, scenario, strategy, memory, epochs=1, augment=False, **settings):
    """The strategy after training on every task of the tiny MNIST, and its method plugin."""
    config = tiny_config("mnist", scenario, strategy, memory=memory, epochs=epochs, **settings)
    seed_everything(0, 1)
    data = load_dataset("mnist", str(root), download=False)
    split = task_split(data)
    ctx = StrategyContext(dataset="mnist", scenario=scenario, split=split, memory=config["memory"],
                          epochs=epochs, batch_size=8, eval_batch_size=64, optimizer=config["optimizer"],
                          params=config["params"], backbone=config["backbone"], augment=augment)
    strategy_ = registry.get(strategy).build(ctx)
    plugin = strategy_.plugins[0]
    held = []
    for experience in build_benchmark(data, scenario).train_stream:
        strategy_.train(experience)
        held.append(plugin.exemplars_held() if hasattr(plugin, "exemplars_held") else None)
    return strategy_, plugin, held


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from fakedata import make_data_root

    return make_data_root(tmp_path_factory.mktemp("baselines"), ("mnist",),
                          mnist={"n_train_per_class": 12, "n_test_per_class": 4})


# --- Progress & Compress

def test_pnc_keeps_one_knowledge_base_and_only_heads_grow(root):
    record = run_cell(tiny_config("mnist", "task-il", "pnc"), str(root), threads=1, progress=False)
    reports = record["per_task"]
    assert len(reports) == 5
    backbone = models.count_params(models.build_features("mnist"))
    assert all(r["kb_params"] == backbone for r in reports)  # one column, the backbone's size
    assert len({r["active_params"] for r in reports}) == 1
    assert len({r["fisher_anchor_bytes"] for r in reports}) == 1
    assert reports[0]["fisher_anchor_bytes"] == 2 * 4 * backbone
    heads = [r["kb_head_params"] for r in reports]
    assert heads == [(400 + 1) * 2 * (i + 1) for i in range(5)]
    growth = [b["params"] - a["params"] for a, b in zip(reports, reports[1:])]
    assert growth == [(400 + 1) * 2] * 4


def test_pnc_compress_moves_the_knowledge_base_toward_the_active_column():
    from strategies.pnc.network import CompressPlugin, PnCNet

    torch.manual_seed(0)
    spec = models.BACKBONES["mlp"]
    model = PnCNet(spec, 2)
    model.kb_heads["0"] = torch.nn.Linear(spec.out_features, 2)
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():  # an active column with a clear opinion, far from the untrained knowledge base
        model.active_head.bias.copy_(torch.tensor([3.0, -3.0]))

    with torch.no_grad():  # the targets: the active column as progress left it
        teacher = F.log_softmax(model.active_logits(x), 1)

    def gap():
        with torch.no_grad():
            kb = F.log_softmax(model.kb_logits(x, 0), 1)
            return float(F.kl_div(kb, teacher, log_target=True, reduction="batchmean"))

    kb_before = [p.detach().clone() for p in model.kb_parameters()]
    active_before = [p.detach().clone() for p in model.active.parameters()]
    before = gap()
    plugin = CompressPlugin(lambda ps: torch.optim.Adam(ps, lr=1e-3), 3, 1000.0, 0.9, batch_size=16)
    plugin.compress(model, 0, x, "cpu")
    assert gap() < 0.5 * before
    assert any(not torch.equal(a, b) for a, b in zip(kb_before, model.kb_parameters()))
    assert all(torch.equal(a, b) for a, b in zip(active_before, model.active.parameters()))


def test_pnc_online_fisher_decays_and_accumulates():
    from strategies.pnc.network import CompressPlugin, PnCNet

    torch.manual_seed(0)
    model = PnCNet(models.BACKBONES["mlp"], 2)
    model.kb_heads["0"] = torch.nn.Linear(400, 2)
    data = [torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 2, (32,)),
            torch.zeros(32, dtype=torch.long)]
    plugin = CompressPlugin(lambda ps: torch.optim.Adam(ps), 1, 1.0, 0.5, batch_size=16)
    plugin.update_fisher(model, 0, data, "cpu")
    first = [f.clone() for f in plugin.fisher]
    plugin.update_fisher(model, 0, data, "cpu")
    # the same data and weights give the same F, so F* = 0.5 F + F
    assert all(torch.allclose(b, 1.5 * a) for a, b in zip(first, plugin.fisher))
    assert sum(float(f.sum()) for f in first) > 0


# --- SupportNet

def test_supportnet_exemplars_are_the_svms_support_vectors():
    from sklearn.svm import SVC

    from strategies.supportnet.plugin import support_exemplars

    gen = torch.Generator().manual_seed(0)
    features = torch.cat([torch.randn(60, 2, generator=gen) + torch.tensor([3.0, 0.0]),
                          torch.randn(60, 2, generator=gen) - torch.tensor([3.0, 0.0])])
    labels = torch.tensor([0] * 60 + [1] * 60)
    support = set(SVC(kernel="linear", C=1.0).fit(features.double().numpy(), labels.numpy()).support_.tolist())
    assert len(support) < 60  # most points lie far from the margin
    chosen = support_exemplars(features, labels, {0: 2, 1: 2}, 1.0, gen)
    for cls, idx in chosen.items():
        assert len(idx) == 2 and set(idx.tolist()) <= support
        assert (labels[idx] == cls).all()
    # a share larger than the support vectors keeps all of them and tops up from the class
    chosen = support_exemplars(features, labels, {0: 40, 1: 40}, 1.0, gen)
    for cls, idx in chosen.items():
        assert len(idx) == 40 == len(set(idx.tolist())) and (labels[idx] == cls).all()
        assert {i for i in support if labels[i] == cls} <= set(idx.tolist())


def test_supportnet_never_holds_more_than_the_budget(root):
    strategy, plugin, held = trained(root, "class-il", "supportnet", memory=10, svm_pool=8)
    assert held == [10] * 5
    assert sorted(k[1] for k in plugin.by_class) == list(range(10))
    assert all(len(v) == len(plugin.by_class[k][0]) for k, v in plugin.stored_features.items())
    assert plugin.fisher and plugin.last_terms["consolidation"] > 0


# --- DER++

class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.float())


def test_derpp_stores_the_logits_of_the_training_pass_with_its_exemplars():
    from strategies.derpp import DerPlusPlus

    plugin = DerPlusPlus(size=5, n_units=4, alpha=1.0, beta=1.0)
    for step in range(4):
        x = torch.arange(4 * step, 4 * step + 4).float().unsqueeze(1).repeat(1, 4)
        y = torch.arange(4) % 3
        out = torch.randn(4, 3)
        plugin.after_training_iteration(SimpleNamespace(mbatch=[x, y, torch.zeros(4, dtype=torch.long)],
                                                        mb_raw_x=x, mb_output=out))
        for slot in range(plugin.exemplars_held()):
            b = plugin.buffer
            rows = torch.nonzero((x == b.x[slot]).all(1)).flatten()
            if len(rows):  # a sample of this step: its logits from this step's output, unit 4 not live
                assert torch.equal(b.logits[slot, :3], out[rows[0]])
                assert b.logits[slot, 3] == -1000.0
    assert plugin.exemplars_held() == 5 and plugin.buffer.seen == 16


def test_derpp_loss_has_both_replay_terms():
    from strategies.derpp import DerPlusPlus

    torch.manual_seed(0)
    model = Linear()
    plugin = DerPlusPlus(size=8, n_units=3, alpha=0.3, beta=0.7)
    x = torch.randn(8, 4)
    batch = [x, torch.arange(8) % 3, torch.zeros(8, dtype=torch.long)]
    plugin.after_training_iteration(SimpleNamespace(mbatch=batch, mb_raw_x=x, mb_output=torch.randn(8, 3)))
    strategy = SimpleNamespace(model=model, device="cpu", mb_y=torch.zeros(8, dtype=torch.long),
                               loss=torch.tensor(1.0))
    plugin.before_backward(strategy)
    terms = plugin.last_terms
    assert terms["mse"] > 0 and terms["ce"] > 0
    assert strategy.loss.item() == pytest.approx(1.0 + 0.3 * terms["mse"] + 0.7 * terms["ce"], rel=1e-5)
    strategy.loss.backward()
    assert model.fc.weight.grad.abs().sum() > 0


def test_derpp_extra_state_counts_exemplars_and_logits(root):
    record = run_cell(tiny_config("mnist", "class-il", "derpp", memory=20), str(root), threads=1, progress=False)
    # 20 images of 784 uint8 pixels, int64 label and task label, 10 float32 logits each
    assert record["extra_state_bytes"] == 20 * (784 + 8 + 8 + 10 * 4)


def test_derpp_holds_at_most_the_budget(root):
    _, plugin, held = trained(root, "class-il", "derpp", memory=20)
    assert all(h <= 20 for h in held) and held[-1] == 20
    assert (plugin.buffer.logits[:, :2] > -1000).all()  # every sample had live units when stored


# --- ER-ACE

def test_er_ace_masks_the_incoming_batch_to_its_classes():
    from strategies.er_ace import AsymmetricReplay

    torch.manual_seed(0)
    model = Linear()
    plugin = AsymmetricReplay(size=8)
    old = [torch.randn(8, 4), torch.tensor([0, 1] * 4), torch.zeros(8, dtype=torch.long)]
    plugin.after_training_iteration(SimpleNamespace(mbatch=old, mb_raw_x=old[0]))
    out = torch.randn(4, 3, requires_grad=True)  # incoming samples of class 2 only
    strategy = SimpleNamespace(model=model, device="cpu", mb_output=out, mb_y=torch.full((4,), 2),
                               loss=torch.tensor(0.0))
    plugin.before_backward(strategy)
    strategy.loss.backward()
    assert (out.grad[:, :2] == 0).all()  # old classes' logits untouched by the incoming samples
    assert model.fc.weight.grad[2].abs().sum() > 0  # the replayed samples see every class, class 2 too
    assert plugin.exemplars_held() == 8


def test_er_ace_loss_is_avalanches_ace_and_stays_finite_at_a_wide_logit_gap():
    """Avalanche's ACECriterion takes log(softmax): once two current classes' logits are more than
    ~104 apart the smaller probability is 0 and the loss NaN (Split-MNIST, 784-1000-1000 MLP, seed 0).
    The plugin's loss is the same value where ACECriterion is finite, and finite beyond."""
    from avalanche.training import ACECriterion

    from strategies.er_ace import AsymmetricReplay, asymmetric_loss

    torch.manual_seed(0)
    out_in, y_in = torch.randn(6, 5) * 3, torch.tensor([3, 1, 3, 4, 1, 1])
    out_buffer, y_buffer = torch.randn(6, 5) * 3, torch.tensor([0, 2, 4, 1, 0, 3])
    assert torch.allclose(asymmetric_loss(out_in, y_in, out_buffer, y_buffer),
                          ACECriterion()(out_in, y_in, out_buffer, y_buffer), atol=1e-5)

    model, plugin = Linear(), AsymmetricReplay(size=8)
    old = [torch.randn(8, 4), torch.tensor([0, 1] * 4), torch.zeros(8, dtype=torch.long)]
    plugin.after_training_iteration(SimpleNamespace(mbatch=old, mb_raw_x=old[0]))
    # classes 1 and 2 incoming, 120 apart: the class-1 sample is confidently wrong
    out = torch.tensor([[0.0, -60.0, 60.0], [0.0, -60.0, 60.0]], requires_grad=True)
    strategy = SimpleNamespace(model=model, device="cpu", mb_output=out, mb_y=torch.tensor([1, 2]),
                               loss=torch.tensor(0.0))
    plugin.before_backward(strategy)
    strategy.loss.backward()
    assert torch.isfinite(strategy.loss) and strategy.loss > 25  # half of the wrong sample's ~120 / 2
    assert torch.isfinite(out.grad).all() and torch.isfinite(model.fc.weight.grad).all()


def test_er_ace_buffer_holds_current_classes_and_at_most_the_budget(root):
    _, plugin, held = trained(root, "class-il", "er_ace", memory=20)
    assert all(h <= 20 for h in held) and held[-1] == 20
    assert len(set(plugin.buffer.y.tolist())) > 2  # a reservoir over the stream, not the last task


# --- DER++ and ER-ACE under the protocol's augmentation

@pytest.mark.parametrize("strategy", ["derpp", "er_ace"])
def test_own_buffer_stores_the_raw_images_under_augmentation(root, strategy):
    """Trained with crop and flip on, every stored image is a training image as the data gives it."""
    from bench.batches import materialize

    _, plugin, _ = trained(root, "class-il", strategy, memory=20, augment=True)
    data = load_dataset("mnist", str(root), download=False)
    raw = torch.cat([materialize(e.dataset.eval())[0] for e in build_benchmark(data, "class-il").train_stream])
    stored = plugin.buffer.x[: plugin.exemplars_held()]
    matches = (stored.flatten(1)[:, None, :] == raw.flatten(1)[None, :, :]).all(2).any(1)
    assert matches.all(), f"{int((~matches).sum())} of {len(stored)} stored images are not raw training images"


class Recorder(torch.nn.Module):
    """A linear model on 8x8 images that keeps every input it is given."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 3)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return self.fc(x.float().flatten(1))


@pytest.mark.parametrize("strategy", ["derpp", "er_ace"])
def test_a_stored_sample_is_augmented_afresh_at_every_replay(strategy):
    """One stored image, drawn again and again: the network sees it under different crops and flips."""
    from bench.augment import CropFlip
    from strategies.derpp import DerPlusPlus
    from strategies.er_ace import AsymmetricReplay

    plugin = DerPlusPlus(size=1, n_units=3, alpha=1.0, beta=1.0) if strategy == "derpp" else AsymmetricReplay(size=1)
    image = torch.randint(1, 256, (1, 1, 8, 8), dtype=torch.uint8)
    batch = [image, torch.tensor([1]), torch.zeros(1, dtype=torch.long)]
    plugin.after_training_iteration(SimpleNamespace(mbatch=batch, mb_raw_x=image, mb_output=torch.randn(1, 3)))
    assert torch.equal(plugin.buffer.x[0], image[0])  # stored raw
    model, augment = Recorder(), CropFlip(seed=0)
    for _ in range(2):  # two steps, each replaying a draw of four (DER++: two draws)
        strategy_ = SimpleNamespace(model=model, device="cpu", augment=augment, mb_y=torch.full((4,), 2),
                                    mb_output=torch.randn(4, 3, requires_grad=True), loss=torch.tensor(0.0))
        plugin.before_backward(strategy_)
    views = torch.cat(model.inputs).flatten(1)
    assert len(views) >= 8 and len(torch.unique(views, dim=0)) > 1, "every replay showed the same tensor"
    assert not (views == image.flatten(1)).all(1).all(), "replayed as stored, not augmented"


def test_pnc_builds_conv_columns_on_a_conv_backbone(tmp_path):
    from fakedata import make_data_root
    from test_strategies import check_record

    root = make_data_root(tmp_path, ("omniglot",))
    record = run_cell(tiny_config("omniglot", "task-il", "pnc"), str(root), threads=1, progress=False)
    check_record(record, 5)
    assert len({r["kb_params"] for r in record["per_task"]}) == 1
