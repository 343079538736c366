"""Baselines held to the protocol: iCaRL's budget and flip, EWC's online mode, exemplars held in every
record, and augmentation reaching every training batch (replayed samples too)."""
import pytest
import torch
from fakedata import make_data_root
from test_strategies import check_record, tiny_config

from bench import augment
from bench.cell import run_cell


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_data_root(tmp_path_factory.mktemp("base"), ("mnist", "cifar10"),
                          mnist={"n_train_per_class": 12, "n_test_per_class": 4},
                          cifar10={"n_train_per_class": 6, "n_test_per_class": 2})


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("memory", [10, 15])  # 15 is not a multiple of 2, 4, 6 or 8 classes seen; 10 of 4 neither
def test_icarl_never_holds_more_than_its_budget(root, memory):
    record = run_cell(tiny_config("mnist", "class-il", "icarl", memory=memory), str(root), threads=1,
                      progress=False)
    check_record(record, 5)
    held = record["exemplars_held"]
    assert len(held) == 5 and max(held) <= memory
    assert held[-1] == memory  # 12 samples per class are plenty: the whole budget is used


def test_icarl_flips_class_means_only_when_the_protocol_says_so(root, monkeypatch):
    def no_flip(*args, **kwargs):
        raise AssertionError("torch.flip called")

    monkeypatch.setattr(torch, "flip", no_flip)
    config = tiny_config("mnist", "class-il", "icarl", memory=20)
    assert config["params"]["flip_means"] is False  # the MNIST protocol: digits are not flip-invariant
    check_record(run_cell(config, str(root), threads=1, progress=False), 5)
    flipping = tiny_config("mnist", "class-il", "icarl", memory=20)
    flipping["params"]["flip_means"] = True
    with pytest.raises(AssertionError, match="torch.flip called"):
        run_cell(flipping, str(root), threads=1, progress=False)


def test_records_state_exemplars_held_after_each_task(root):
    replay = run_cell(tiny_config("mnist", "class-il", "replay", memory=15), str(root), threads=1, progress=False)
    assert replay["exemplars_held"] == [15] * 5 and replay["shared_replay"] is False
    ewc = run_cell(tiny_config("mnist", "class-il", "ewc", memory=15), str(root), threads=1, progress=False)
    assert ewc["exemplars_held"] == [15] * 5 and ewc["shared_replay"] is True
    naive = run_cell(tiny_config("mnist", "class-il", "naive"), str(root), threads=1, progress=False)
    assert naive["exemplars_held"] is None and naive["shared_replay"] is False


def test_ewc_online_mode_trains(root):
    config = tiny_config("mnist", "task-il", "ewc")
    config["params"].update(mode="online", decay_factor=0.5)
    check_record(run_cell(config, str(root), threads=1, progress=False), 5)


@pytest.mark.parametrize("strategy", ["replay", "naive"])
def test_augmentation_reaches_new_and_replayed_samples(root, monkeypatch, strategy):
    seen = []
    original = augment.CropFlip.__call__

    def spy(self, x):
        seen.append(len(x))
        return original(self, x)

    monkeypatch.setattr(augment.CropFlip, "__call__", spy)
    config = tiny_config("cifar10", "class-il", strategy, memory=10)
    assert config["augment"] is True  # the CIFAR protocols augment
    check_record(run_cell(config, str(root), threads=1, progress=False), 5)
    # batch 8: 12 samples per task give batches of 8 and 4; replay doubles them from task 2 on
    assert sorted(set(seen)) == ([4, 8, 16] if strategy == "replay" else [4, 8])
    seen.clear()
    config = tiny_config("mnist", "class-il", strategy, memory=10)
    assert "augment" not in config
    run_cell(config, str(root), threads=1, progress=False)
    assert seen == []
