"""Every registered strategy runs a tiny cell end to end, on data written in the official layouts."""
import math

import pytest
from fakedata import make_data_root

from bench import config as cfg
from bench import registry
from bench.cell import run_cell


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_data_root(tmp_path_factory.mktemp("strat"), ("mnist", "cifar10", "cifar100", "omniglot"),
                          mnist={"n_train_per_class": 12, "n_test_per_class": 4})


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


def tiny_config(dataset, scenario, strategy, memory=None, epochs=1, **settings):
    protocol = cfg.load_protocol(dataset, scenario)
    protocol.update(epochs=epochs, batch_size=8, **settings)
    budget = protocol["memory"] if memory is None else memory
    used = budget if registry.get(strategy).memory != "none" else 0
    config = cfg.resolve(protocol, dataset, scenario, strategy, seed=0, memory_used=used,
                         schema=registry.get(strategy).settings)
    config["hash"] = cfg.config_hash(config)
    return config


def check_record(record, n_tasks, whole_stream=False):
    assert record["status"] == "ok"
    matrix = record["acc_matrix"]
    assert len(matrix) == (1 if whole_stream else n_tasks)
    for i, row in enumerate(matrix):
        seen = n_tasks if whole_stream else i + 1
        assert len(row) == n_tasks
        assert all(0.0 <= a <= 1.0 for a in row[:seen])
        assert all(a is None for a in row[seen:])
    assert 0.0 <= record["metrics"]["final_acc"] <= 1.0
    assert record["params"] > 0 and record["time_s"] > 0 and record["peak_rss_mb"] > 0


# rows at IB's size run where a protocol declares the size (tested with a width in test_controls)
CELLS = [(name, scenario) for name, info in registry.strategies().items() for scenario in info.scenarios
         if "declares no IB size" not in (info.why_not("mnist", scenario, 20) or "")]


@pytest.mark.parametrize("strategy,scenario", CELLS)
def test_every_strategy_runs_a_tiny_cell_in_each_scenario_it_applies_to(root, strategy, scenario):
    memory = 20 if scenario == "class-il" or registry.get(strategy).why_not("mnist", scenario, 0) else None
    config = tiny_config("mnist", scenario, strategy, memory=memory)
    record = run_cell(config, str(root), threads=1, progress=False)
    check_record(record, 5, registry.get(strategy).whole_stream)
    assert record["config"]["memory"] == (0 if registry.get(strategy).memory == "none" else memory or 0)


@pytest.mark.parametrize("dataset,scenario,strategy,n_tasks", [
    ("cifar10", "class-il", "replay", 5),
    ("cifar100", "task-il", "naive", 10),
    ("omniglot", "task-il", "pnn", 5),
    ("omniglot", "class-il", "icarl", 5),
])
def test_conv_backbones_run_on_every_dataset(root, dataset, scenario, strategy, n_tasks):
    config = tiny_config(dataset, scenario, strategy, memory=20)
    check_record(run_cell(config, str(root), threads=1, progress=False), n_tasks)


def test_methods_that_store_data_report_it_as_extra_state(root):
    """The matched memory and EWC's Fisher and old weights show up in extra_state_bytes."""
    naive = run_cell(tiny_config("mnist", "class-il", "naive"), str(root), threads=1, progress=False)
    replay = run_cell(tiny_config("mnist", "class-il", "replay", memory=20), str(root), threads=1,
                      progress=False)
    ewc = run_cell(tiny_config("mnist", "class-il", "ewc", memory=20), str(root), threads=1, progress=False)
    assert naive["extra_state_bytes"] == 0
    # 20 exemplars of 784 uint8 pixels with an int64 label and task label each
    assert replay["extra_state_bytes"] == 20 * (784 + 8 + 8)
    # per experience: a copy of the weights and a Fisher value per weight, float32
    assert ewc["extra_state_bytes"] >= replay["extra_state_bytes"] + 2 * 4 * naive["params"]


def test_training_learns_the_current_task(root):
    record = run_cell(tiny_config("mnist", "task-il", "naive", epochs=5), str(root), threads=1, progress=False)
    diagonal = [record["acc_matrix"][i][i] for i in range(5)]
    assert sum(diagonal) / 5 > 0.8  # fake digits carry a strong class pattern


def test_pnn_does_not_forget(root):
    record = run_cell(tiny_config("mnist", "task-il", "pnn", epochs=2), str(root), threads=1, progress=False)
    first_column = [row[0] for row in record["acc_matrix"]]
    assert len(set(first_column)) == 1
    assert record["metrics"]["forgetting"] == 0.0
    assert not math.isnan(record["metrics"]["bwt"])


def test_pnn_late_column_keeps_the_scale_of_the_first():
    """Lateral links from 40 earlier columns must not blow up a new column's activations: a sum of
    one link per earlier column did (here its logits spread 80x the first column's at init), and on
    Omniglot the columns after the 35th then stayed at chance on their own alphabet."""
    import torch

    from bench.models import backbone_spec
    from strategies.pnn.network import Column, ProgressiveNet

    torch.manual_seed(0)
    net = ProgressiveNet(backbone_spec("omniglot"), 20, width_factor=0.25)
    for task in range(1, 41):
        net.columns.append(Column(net.spec, task, 20))
        net.column_of_task[task] = task
    x = (torch.rand(16, 1, 28, 28) * 255).to(torch.uint8)
    with torch.no_grad():
        first, last = net.forward_single_task(x, 0).std(), net.forward_single_task(x, 40).std()
    assert last < 3 * first


def test_pnn_lateral_into_a_conv_fed_layer_goes_through_a_1x1_convolution():
    """Omniglot's quarter-width columns: the fully connected layer reads the earlier columns' last
    conv maps through a 1x1 convolution onto one column's 16 channels, flattened only after it."""
    import torch

    from bench.models import backbone_spec, count_params
    from strategies.pnn.network import Column, ProgressiveNet

    net = ProgressiveNet(backbone_spec("omniglot"), 5, width_factor=0.25)
    for task in (1, 2):
        net.columns.append(Column(net.spec, task, 5))
        net.column_of_task[task] = task
    lateral = net.columns[2].adapters[2]  # into layer 3 (linear 64) from the 16-channel 3x3 maps
    assert isinstance(lateral.V, torch.nn.Conv2d) and lateral.V.kernel_size == (1, 1)
    assert (lateral.V.in_channels, lateral.V.out_channels) == (2 * 16, 16)
    seen = []
    lateral.V.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    net.forward_single_task(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), 2)
    assert seen == [(4, 2 * 16, 3, 3)]  # the maps themselves, not their flattening

    # by hand: conv 1->8, 8->16, 16->16 (3x3), linear 16*3*3->64, head 64->5
    column = (8 * 9 + 8) + (16 * 8 * 9 + 16) + (16 * 16 * 9 + 16) + (144 * 64 + 64) + (64 * 5 + 5)

    def adapters(k):  # k scalars, V (1x1 onto one column's channels) and U per layer, for k earlier columns
        return ((k + 8 * k * 8 + 8 + 16 * 8 * 9 + 16) + (k + 16 * k * 16 + 16 + 16 * 16 * 9 + 16)
                + (k + 16 * k * 16 + 16 + 144 * 64 + 64))

    assert count_params(net) == 3 * column + adapters(1) + adapters(2)


def test_joint_counts_the_network_it_trains(root):
    """Avalanche's joint training sizes every Omniglot head at the largest alphabet's class count and
    masks the rest; the record counts each head at its own alphabet's classes, as naive's heads are."""
    import torch
    from avalanche.models import MultiHeadClassifier

    from bench import models
    from bench.heads import usable_params

    records = {s: run_cell(tiny_config("omniglot", "task-il", s), str(root), threads=1, progress=False)
               for s in ("naive", "joint")}
    assert records["joint"]["params"] == records["naive"]["params"]
    assert records["joint"]["extra_state_bytes"] == 0

    features = models.build_features("omniglot")
    heads = MultiHeadClassifier(features.out_features)
    heads.classifiers["0"].classifier = torch.nn.Linear(features.out_features, 7)  # as joint sizes it
    heads.active_units_T0 = torch.tensor([1, 1, 1, 0, 0, 0, 0], dtype=torch.int8)  # a 3-class task
    assert usable_params(heads) == 3 * (features.out_features + 1)


def test_resnet18_backbone_option_trains(root):
    """The reduced ResNet-18 meant for GPU runs is a drop-in backbone (here on the CPU)."""
    config = tiny_config("cifar10", "class-il", "naive", backbone="resnet18")
    record = run_cell(config, str(root), threads=1, progress=False)
    check_record(record, 5)
    assert record["config"]["backbone"] == "resnet18"
    assert record["params"] > 1_000_000
