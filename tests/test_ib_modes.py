"""IB's two rows: `ib`, the reference's continual recipe (one global gamma, a layer grows only when
none of its channels is free), and `ib_rate`, the preset per-task rate (strategies/ib_rate.py)."""
from __future__ import annotations

import argparse
import shutil

import pytest
from conftest import FAST, records

from bench import cli
from bench import config as cfg
from bench import registry
from bench.protocol_writeback import write_choice
from bench.tune import search_spaces

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official:UserWarning")


def run_args(root, results, strategy: str, *extra: str) -> list[str]:
    return ["run", "--scenario", "task-il", "--strategies", strategy, "--data-root", str(root),
            "--results", str(results), "--no-download", "--jobs", "1", *FAST, *extra]


def test_ib_runs_the_reference_recipe_with_one_global_gamma(mnist_root, tmp_path):
    results = tmp_path / "results"
    assert cli.main(run_args(mnist_root, results, "ib", "--set", "strategies.ib.gamma=0.003")) == 0
    [record] = records(results).values()
    assert record["status"] == "ok"
    params = record["config"]["params"]
    assert "rate" not in params and params["gamma"] == 0.003
    # every task trained with that one gamma (with a rate, each reports a list of per-layer gammas)
    assert [task["gamma"] for task in record["per_task"]] == [0.003] * 5
    assert all(task["capped"] == [0, 0] for task in record["per_task"])  # no rate, nothing to cap
    assert record["per_task"][0]["grew_share"] is None  # the first task has no growth to decide
    assert all(0.0 <= task["grew_share"] <= 1.0 for task in record["per_task"][1:])


def test_ib_rate_trains_toward_its_rate(mnist_root, tmp_path):
    results = tmp_path / "results"
    assert cli.main(run_args(mnist_root, results, "ib_rate")) == 0
    [record] = records(results).values()
    assert record["status"] == "ok" and "gamma" not in record["config"]["params"]
    assert record["config"]["params"]["rate"] == cfg.load_protocol("mnist", "task-il")["strategies"]["ib_rate"]["rate"]
    assert all(isinstance(task["gamma"], list) for task in record["per_task"])  # per layer, adapted


@pytest.mark.parametrize("strategy, setting, message", [
    ("ib_rate", "strategies.ib_rate.rate=none", "strategies.ib_rate.rate must be a number, got 'none'"),
    ("ib_rate", "strategies.ib_rate.rate=never", "strategies.ib_rate.rate must be a number, got 'never'"),
    ("ib", "strategies.ib.rate=0.1", "rate"),  # the global recipe has no rate: ib_rate has
])
def test_rate_words_the_row_cannot_take_exit_2(mnist_root, tmp_path, capsys, strategy, setting, message):
    assert cli.main(run_args(mnist_root, tmp_path / "r", strategy, "--set", setting)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_tuning_grid_holds_none_beside_numbers_and_writes_it_back(tmp_path, monkeypatch):
    _, spaces = search_spaces({"tune": {"ib": {"grow": ["none", 4, 8]}}}, registry.strategies())
    assert spaces["ib"]["grow"] == [None, 4, 8]
    folder = tmp_path / "protocols"
    shutil.copytree(cfg.PROTOCOL_DIR, folder)
    monkeypatch.setattr(cfg, "PROTOCOL_DIR", folder)
    args = argparse.Namespace(dataset="mnist", scenario="task-il")
    protocol = cfg.load_protocol("mnist", "task-il")
    write_choice(args, protocol["memory"], "ib", {"grow": None}, 0.9, "python -m bench tune")
    assert 'grow = "none"' in (folder / "mnist-task-il.toml").read_text()
    written = cfg.load_protocol("mnist", "task-il")
    config = cfg.resolve(written, "mnist", "task-il", "ib", 0, 0, schema=registry.get("ib").settings)
    assert config["params"]["grow"] is None and "grow" in config["tuned"]
