"""Task splits, the Avalanche benchmarks built from them, and the heads they imply."""
import pytest
import torch
from fakedata import make_data_root

from bench.datasets import load_dataset
from bench.scenarios import build_benchmark, holdout_split, task_split


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_data_root(tmp_path_factory.mktemp("scn"), ("mnist", "cifar10", "cifar100", "omniglot"),
                          omniglot={"chars_per_alphabet": 3})


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("name,tasks", [
    ("mnist", [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]),
    ("cifar10", [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]),
    ("cifar100", [tuple(range(k, k + 10)) for k in range(0, 100, 10)]),
])
def test_label_order_splits(root, name, tasks):
    assert task_split(load_dataset(name, root, download=False)).task_classes == tuple(tasks)


def test_omniglot_has_one_task_per_alphabet_in_loader_order(root):
    data = load_dataset("omniglot", root, download=False)
    split = task_split(data)
    assert split.n_tasks == len(data.task_names) == 5
    assert split.task_classes == ((0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11), (12, 13, 14))


def _streams(data, scenario):
    bench = build_benchmark(data, scenario)
    out = []
    for train, test in zip(bench.train_stream, bench.test_stream):
        out.append((train.task_label, sorted(set(train.dataset.targets)), sorted(set(test.dataset.targets)),
                    len(train.dataset), len(test.dataset)))
    return out


def test_class_il_keeps_global_labels_and_one_task_label(root):
    data = load_dataset("mnist", root, download=False)
    streams = _streams(data, "class-il")
    assert [s[0] for s in streams] == [0, 0, 0, 0, 0]
    assert [s[1] for s in streams] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [s[2] for s in streams] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert sum(s[3] for s in streams) == len(data.y_train)
    assert sum(s[4] for s in streams) == len(data.y_test)


def test_task_il_numbers_tasks_and_restarts_class_ids(root):
    data = load_dataset("cifar100", root, download=False)
    streams = _streams(data, "task-il")
    assert [s[0] for s in streams] == list(range(10))
    assert all(s[1] == list(range(10)) and s[2] == list(range(10)) for s in streams)


def test_task_il_heads_match_each_tasks_classes(root):
    """Omniglot alphabets differ in size; every head must have exactly its task's classes."""
    from avalanche.models.utils import avalanche_model_adaptation

    from bench.heads import TaskILNet
    from bench.models import build_features

    data = load_dataset("omniglot", root, download=False)
    # make the alphabets differ in size by dropping classes from two of them
    keep = ~torch.isin(data.y_train, torch.tensor([2, 5]))
    keep_test = ~torch.isin(data.y_test, torch.tensor([2, 5]))
    data.x_train, data.y_train = data.x_train[keep], data.y_train[keep]
    data.x_test, data.y_test = data.x_test[keep_test], data.y_test[keep_test]
    data.task_of_class = [t for c, t in enumerate(data.task_of_class) if c not in (2, 5)]
    remap = {old: new for new, old in enumerate(c for c in range(15) if c not in (2, 5))}
    data.y_train = torch.tensor([remap[int(y)] for y in data.y_train])
    data.y_test = torch.tensor([remap[int(y)] for y in data.y_test])
    bench = build_benchmark(data, "task-il")
    net = TaskILNet(build_features("omniglot"))
    for exp in bench.train_stream:
        avalanche_model_adaptation(net, exp)
    sizes = [net.classifier.classifiers[str(t)].classifier.out_features for t in range(5)]
    assert sizes == [2, 2, 3, 3, 3]
    # mixed-task batches: smaller heads are padded with a value below any logit, never zero
    x = data.x_test[:8]
    out = net(x, torch.tensor([1] * 4 + [2] * 4))
    assert out.shape == (8, 3)
    assert (out[:4, 2] == net.PAD).all() and (out[4:] != net.PAD).all()


def test_holdout_replaces_the_test_set_with_unseen_training_samples(root):
    data = load_dataset("mnist", root, download=False)
    held = holdout_split(data, 0.2)
    n = len(data.y_train)
    assert len(held.y_train) + len(held.y_test) == n
    assert torch.equal(torch.bincount(held.y_test, minlength=10), torch.full((10,), 1))
    # no held-out image is also a training image
    train_rows = {bytes(x.numpy()) for x in held.x_train}
    assert not any(bytes(x.numpy()) in train_rows for x in held.x_test)
    with pytest.raises(ValueError, match="between|in \\(0, 1\\)"):
        holdout_split(data, 1.5)


def _legacy_benchmark(data, scenario):
    """The stream as the deprecated generator built it before (the reference for the current API)."""
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )

    split = task_split(data)
    task_il = scenario == "task-il"
    return nc_benchmark(
        tensor_dataset(data.x_train, data.y_train), tensor_dataset(data.x_test, data.y_test),
        n_experiences=split.n_tasks, task_labels=task_il, shuffle=False,
        fixed_class_order=[c for classes in split.task_classes for c in classes],
        per_exp_classes={k: len(c) for k, c in enumerate(split.task_classes)},
        class_ids_from_zero_in_each_exp=task_il)


def _contents(stream):
    from bench.strategy import materialize

    out = []
    for exp in stream:
        x, y, t = materialize(exp.dataset)
        out.append({"id": exp.current_experience, "task_label": exp.task_label, "task_labels": list(exp.task_labels),
                    "classes": sorted(exp.classes_in_this_experience), "x": x, "y": y, "t": t})
    return out


@pytest.mark.parametrize("name,scenario", [("mnist", "class-il"), ("mnist", "task-il"),
                                           ("omniglot", "task-il"), ("omniglot", "class-il")])
def test_current_api_builds_the_same_streams_as_the_deprecated_generator(root, name, scenario):
    data = load_dataset(name, root, download=False)
    # shuffle the samples so that "dataset order" is not also "class order"
    perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(0))
    data.x_train, data.y_train = data.x_train[perm], data.y_train[perm]
    new, old = build_benchmark(data, scenario), _legacy_benchmark(data, scenario)
    for stream in ("train_stream", "test_stream"):
        got, expected = _contents(getattr(new, stream)), _contents(getattr(old, stream))
        assert len(got) == len(expected) == task_split(data).n_tasks
        for g, e, g_exp, e_exp in zip(got, expected, getattr(new, stream), getattr(old, stream)):
            assert (g["id"], g["task_label"], g["task_labels"], g["classes"]) == \
                (e["id"], e["task_label"], e["task_labels"], e["classes"])
            assert torch.equal(g["y"], e["y"]) and torch.equal(g["t"], e["t"]) and torch.equal(g["x"], e["x"])
            if name == "mnist":  # what Avalanche's ICaRL reads (it runs Class-IL on MNIST)
                assert list(g_exp.benchmark.n_classes_per_exp) == list(e_exp.benchmark.n_classes_per_exp)
                assert list(g_exp.benchmark.classes_order) == list(e_exp.benchmark.classes_order)
