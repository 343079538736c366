"""`python -m bench tune`: search spaces from the protocol, at most B trials per strategy, scored on
held-out training data only, the winner written where the next `run` reads it.

Runs `bench.cli.main` in this process on a copy of the protocol files, so the
repository's protocols are never written.
"""
import argparse
import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from fakedata import idx_bytes, make_data_root

from bench import cli
from bench import config as cfg
from bench import registry
from bench.tune import search_spaces, trial_points

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official:UserWarning")

SPACE = """
[tune]
budget = 2

[tune.ewc]
lambda = [1.0, 1e6, 1e3]
"""


@pytest.fixture
def protocols(tmp_path, monkeypatch) -> Path:
    """A copy of the protocols with a small search space for EWC in mnist class-il."""
    folder = tmp_path / "protocols"
    shutil.copytree(cfg.PROTOCOL_DIR, folder)
    path = folder / "mnist-class-il.toml"
    text = path.read_text()
    path.write_text(text[: text.index("[tune]")] + SPACE)
    monkeypatch.setattr(cfg, "PROTOCOL_DIR", folder)
    return folder


def tune_args(root, results, *extra):
    return ["tune", "--scenario", "class-il", "--strategies", "ewc", "--data-root", str(root),
            "--results", str(results), "--no-download", "--jobs", "1", *FAST, *extra]


def plan_config(root, results, *extra) -> dict:
    parser = cli.build_parser()
    args = parser.parse_args(["run", "--scenario", "class-il", "--data-root", str(root), "--results", str(results),
                              "--no-download", "--strategies", "ewc", *extra])
    cells, _ = cli.plan(args)
    return cells[0][0].config


def test_trial_points_full_grid_or_budget_sampled_with_the_seed():
    space = {"a": [1, 2, 3], "b": ["x", "y"]}
    assert len(trial_points(space, 8, 0)) == 6
    drawn = trial_points(space, 4, 0)
    assert len(drawn) == 4 and len({tuple(p.items()) for p in drawn}) == 4
    assert drawn == trial_points(space, 4, 0) and drawn != trial_points(space, 4, 1)


@pytest.mark.parametrize("space,message", [
    ({"ewc": {"lamda": [1.0]}}, "ewc has no setting lamda"),
    ({"ewc": {"lambda": [-1.0]}}, "tune.ewc.lambda must be >= 0.0"),
    ({"ewc": {"mode": ["offline"]}}, "tune.ewc.mode must be one of"),
    ({"ewc": {"lambda": 5.0}}, "must be a non-empty list"),
    ({"ewcc": {"lambda": [1.0]}}, "unknown strategy section [tune.ewcc]"),
    ({"budget": 0}, "tune.budget must be a whole number >= 1"),
])
def test_search_space_is_checked_against_the_strategy_settings(space, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        search_spaces({"tune": space}, registry.strategies())


def test_memory_free_rows_search_their_own_space_where_the_protocol_declares_one():
    tune = {"ewc": {"lambda": [1.0, 10.0]}, "lwf": {"alpha": [1.0]}, "memory0": {"ewc": {"lambda": [1e6]}}}
    known = registry.strategies()
    assert search_spaces({"tune": copy.deepcopy(tune)}, known, memory=200)[1] == \
        {"ewc": {"lambda": [1.0, 10.0]}, "lwf": {"alpha": [1.0]}}
    assert search_spaces({"tune": copy.deepcopy(tune)}, known, memory=0)[1] == \
        {"ewc": {"lambda": [1e6]}, "lwf": {"alpha": [1.0]}}
    with pytest.raises(ValueError, match=r"tune\.memory0\.ewc\.lambda must be >= 0\.0"):
        search_spaces({"tune": {"memory0": {"ewc": {"lambda": [-1.0]}}}}, known, memory=0)
    with pytest.raises(ValueError, match=r"unknown strategy section \[tune\.memory0\.ewcc\]"):
        search_spaces({"tune": {"memory0": {"ewcc": {"lambda": [1.0]}}}}, known)


def test_every_protocol_declares_valid_search_spaces():
    for path in sorted(cfg.PROTOCOL_DIR.glob("*.toml")):
        budget, spaces = search_spaces(cfg.load_protocol(*path.stem.split("-", 1)), registry.strategies())
        assert budget == 8 and "ewc" in spaces, path.name


def test_bad_search_space_exits_2_before_training(protocols, mnist_root, tmp_path, capsys):
    path = protocols / "mnist-class-il.toml"
    path.write_text(path.read_text().replace("lambda = [1.0, 1e6, 1e3]", "lambda = [1.0, -2.0]"))
    assert cli.main(tune_args(mnist_root, tmp_path / "results")) == cli.EXIT_USAGE
    assert "tune.ewc.lambda must be >= 0.0, got -2.0" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_tune_scores_held_out_data_and_writes_the_winner_back(protocols, tmp_path, capsys, bench_cache):
    sizes = {"n_train_per_class": 20, "n_test_per_class": 5}
    root = make_data_root(tmp_path / "a", ("mnist",), mnist=sizes)
    # the same training data with scrambled test labels: a score that read the test split would change
    other = make_data_root(tmp_path / "b", ("mnist",), mnist=sizes)
    labels = other / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    scrambled = np.random.default_rng(1).permutation(np.frombuffer(labels.read_bytes()[8:], np.uint8))
    labels.write_bytes(idx_bytes(scrambled))
    results = tmp_path / "results"

    assert cli.main(tune_args(root, results)) == 0
    out, err = capsys.readouterr()
    assert "budget 2 trials per strategy" in err and "lambda in [1.0, 1000000.0, 1000.0]: 2 trial(s)" in err
    trials = sorted((results / "tune" / "runs").glob("*.json"))
    assert len(trials) == 2  # 3 points, budget 2
    assert not (results / "runs").exists() or not list((results / "runs").glob("*.json"))  # tables never see them
    scores = sorted(line for line in out.splitlines() if "held-out final accuracy" in line)

    assert cli.main(tune_args(other, tmp_path / "other")) == 0
    out_other, _ = capsys.readouterr()
    assert sorted(line for line in out_other.splitlines() if "held-out final accuracy" in line) == scores

    chosen = next(line for line in out.splitlines() if "best lambda=" in line)
    best = float(chosen.split("best lambda=")[1].split()[0])
    text = (protocols / "mnist-class-il.toml").read_text()
    assert "# split-mnist, class-il" in text.lower()  # the file's own comments stay
    assert f"lambda = {best}" in text and "tuned = [\"lambda\"]" in text and "python -m bench tune" in text
    config = plan_config(root, tmp_path / "run")  # the next run uses the chosen value, and says so
    assert config["params"]["lambda"] == best and config["tuned"] == ["lambda"] and config["holdout"] == 0.0

    assert cli.main(tune_args(root, results)) == 0  # resumed: nothing trains again
    assert "0 trial(s) to run, 2 already done" in capsys.readouterr().err


def test_memory_free_values_are_tuned_at_memory_0_and_used_by_run_memory_0(protocols, mnist_root, tmp_path,
                                                                            capsys):
    buffered = cfg.load_protocol("mnist", "class-il")["strategies"]["ewc"]["lambda"]
    assert cli.main(tune_args(mnist_root, tmp_path / "results", "--memory", "0", "--budget", "1")) == 0
    best = float(capsys.readouterr().out.split("best lambda=")[1].split()[0])
    text = (protocols / "mnist-class-il.toml").read_text()
    assert "[memory0.ewc]" in text
    assert plan_config(mnist_root, tmp_path / "run", "--memory", "0")["params"]["lambda"] == best
    assert plan_config(mnist_root, tmp_path / "run")["params"]["lambda"] == buffered  # the buffered row's own


def test_memory_0_class_il_skips_what_needs_memory_and_runs_the_rest(mnist_root, tmp_path):
    args = cli.build_parser().parse_args(["run", "--scenario", "class-il", "--memory", "0", "--data-root",
                                          str(mnist_root), "--results", str(tmp_path), "--no-download"])
    cells, skipped = cli.plan(args)
    reasons = dict(skipped)
    # everything that stores exemplars is skipped with its reason, and so are the Task-IL-only methods
    assert set(reasons) == {"replay", "icarl", "derpp", "er_ace", "supportnet", "pnn", "pnc", "replay_ncm",
                            "replay_at_ib_size", "er_ace_at_ib_size", "lwf_at_ib_size", "packnet", "hat"}
    assert "task-il only" in reasons["pnn"] and "task-il only" in reasons["pnc"]
    assert all("memory" in reasons[name] for name in ("replay", "icarl", "derpp", "er_ace", "supportnet"))
    planned = {cell.config["strategy"] for cell, _ in cells}
    assert {"naive", "joint", "ewc", "lwf", "ib"} <= planned
    assert all(cell.config["memory"] == 0 for cell, _ in cells)
