"""IB's two modes, chosen by `rate` alone: a number (the adaptive per-channel gamma) or "none" (one
global gamma, the reference's recipe), which a protocol, `--set` and a tuning grid can all express
(TOML has no null)."""
from __future__ import annotations

import argparse
import shutil

import pytest
from conftest import FAST, records

from bench import cli
from bench import config as cfg
from bench import registry
from bench.tune import _write_choice, search_spaces

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official:UserWarning")


def run_args(root, results, *extra: str) -> list[str]:
    return ["run", "--scenario", "task-il", "--strategies", "ib", "--data-root", str(root),
            "--results", str(results), "--no-download", "--jobs", "1", *FAST, *extra]


def test_ib_runs_with_one_global_gamma_when_the_command_line_unsets_the_rate(mnist_root, tmp_path):
    results = tmp_path / "results"
    assert cli.main(run_args(mnist_root, results, "--set", "strategies.ib.rate=none",
                             "--set", "strategies.ib.gamma=0.003")) == 0
    [record] = records(results).values()
    assert record["status"] == "ok"
    params = record["config"]["params"]
    assert params["rate"] is None and params["gamma"] == 0.003
    # every task trained with that one gamma (with a rate, each reports a list of per-layer gammas)
    assert [task["gamma"] for task in record["per_task"]] == [0.003] * 5
    assert all(task["capped"] == [0, 0] for task in record["per_task"])  # no rate, nothing to cap


def test_the_protocols_rate_and_none_resolve_to_the_two_modes(mnist_root, tmp_path):
    def params(*extra: str) -> dict:
        cells, _ = cli.plan(cli.build_parser().parse_args(run_args(mnist_root, tmp_path / "r", *extra)))
        return cells[0][0].config["params"]

    assert params()["rate"] == 0.05  # the protocol's
    unset = params("--set", "strategies.ib.rate=none")
    assert unset["rate"] is None
    # "none" is the default itself: the same configuration as a protocol without the key
    protocol = cfg.load_protocol("mnist", "task-il")
    del protocol["strategies"]["ib"]["rate"]
    bare = cfg.resolve(protocol, "mnist", "task-il", "ib", 0, 0, schema=registry.get("ib").settings)
    assert bare["params"] == unset


def test_bad_rate_words_exit_2(mnist_root, tmp_path, capsys):
    assert cli.main(run_args(mnist_root, tmp_path / "r", "--set", "strategies.ib.rate=never")) == cli.EXIT_USAGE
    assert "strategies.ib.rate must be a number, got 'never'" in capsys.readouterr().err


def test_a_tuning_grid_holds_none_beside_rates_and_writes_it_back(tmp_path, monkeypatch):
    _, spaces = search_spaces({"tune": {"ib": {"rate": ["none", 0.1, 0.2]}}}, registry.strategies())
    assert spaces["ib"]["rate"] == [None, 0.1, 0.2]
    folder = tmp_path / "protocols"
    shutil.copytree(cfg.PROTOCOL_DIR, folder)
    monkeypatch.setattr(cfg, "PROTOCOL_DIR", folder)
    args = argparse.Namespace(dataset="mnist", scenario="task-il")
    protocol = cfg.load_protocol("mnist", "task-il")
    _write_choice(args, protocol["memory"], "ib", {"rate": None}, 0.9, "python -m bench tune")
    assert 'rate = "none"' in (folder / "mnist-task-il.toml").read_text()
    written = cfg.load_protocol("mnist", "task-il")
    config = cfg.resolve(written, "mnist", "task-il", "ib", 0, 0, schema=registry.get("ib").settings)
    assert config["params"]["rate"] is None and config["tuned"] == ["rate", "sigma_init"]
