"""What keeps a contributor's new method honest: the memory rules checked in the cell, settings errors that
name the fix, the untuned mark, `bench prune`, and fingerprints that adding a method leaves alone."""
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from test_strategies import tiny_config

from bench import cli, registry
from bench.cell import MemoryBudgetError, run_cell
from bench.registry import StrategyInfo
from bench.runner import compute_record


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from fakedata import make_data_root

    return make_data_root(tmp_path_factory.mktemp("safety"), ("mnist",),
                          mnist={"n_train_per_class": 12, "n_test_per_class": 4})


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


def fake_strategy(monkeypatch, name: str, memory: str, holds=None):
    """Register a strategy whose build forgets `replay=False` and whose plugin says it holds `holds(task)`."""

    class Store:
        def __init__(self):
            self.tasks = 0

        def exemplars_held(self):
            return holds(self.tasks)

        def after_training_exp(self, strategy, **kwargs):
            self.tasks += 1

    def build(ctx):
        return ctx.template(plugins=[Store()] if holds else [])  # replay=False forgotten

    module = types.ModuleType(name)
    module.__name__ = "strategies.naive"  # provenance hashes a real strategy file
    module.SCENARIOS, module.MEMORY, module.build = ("class-il",), memory, build
    monkeypatch.setitem(registry.strategies(), name, StrategyInfo(name, module))


def config_for(name, memory=20):
    config = tiny_config("mnist", "class-il", "naive", memory=memory)
    config.update(strategy=name, memory=memory)
    return config


def test_an_own_memory_strategy_never_gets_the_shared_buffer(root, monkeypatch):
    fake_strategy(monkeypatch, "forgetful", "own", holds=lambda task: 0)
    record = run_cell(config_for("forgetful"), str(root), threads=1, progress=False)
    assert record["exemplars_held"] == [0] * 5  # the shared buffer would hold 20 from the first task


def test_a_strategy_over_the_budget_ends_failed_with_the_reason(root, monkeypatch):
    fake_strategy(monkeypatch, "greedy", "own", holds=lambda task: 10 * task)
    record = compute_record(config_for("greedy"), str(root), 1, "cpu")
    assert record["status"] == "failed"
    assert "greedy holds 30 exemplars after task 3, over the cell's budget of 20" in record["error"]


def test_a_memory_keeping_strategy_must_say_what_it_holds(root, monkeypatch):
    fake_strategy(monkeypatch, "silent", "own")
    with pytest.raises(MemoryBudgetError, match="exemplars_held"):
        run_cell(config_for("silent"), str(root), threads=1, progress=False)


def plan_args(root, results, *extra):
    return cli.build_parser().parse_args(["run", "--scenario", "class-il", "--data-root", str(root),
                                          "--results", str(results), "--no-download", *extra])


def test_an_unknown_setting_names_the_file_to_declare_it_in(root, tmp_path):
    with pytest.raises(cli.UsageError) as error:
        cli.plan(plan_args(root, tmp_path, "--strategies", "naive", "--set", "strategies.naive.lambda=1"))
    text = str(error.value)
    assert "[strategies.naive]" in text and "strategies/naive.py" in text and "SETTINGS" in text
    assert "declares none" in text


def test_a_section_of_a_strategy_not_run_says_whose_it_is(root, tmp_path):
    with pytest.raises(cli.UsageError) as error:
        cli.plan(plan_args(root, tmp_path, "--strategies", "naive", "--set", "strategies.ewc.lamda=1"))
    text = str(error.value)
    assert "[strategies.ewc]" in text and "of ewc, not run now" in text and "strategies/ewc.py" in text
    assert "it declares lambda, mode, decay_factor" in text


def test_untuned_defaults_are_said_in_the_run_and_marked_in_the_table(root, tmp_path, capsys, monkeypatch):
    import shutil

    import tomlkit

    from bench import config as cfg
    from bench import report
    from bench.plan import untuned

    # a protocol without si's section (the committed one has been tuned for si since)
    folder = tmp_path / "protocols"
    shutil.copytree(cfg.PROTOCOL_DIR, folder)
    protocol = folder / "mnist-class-il.toml"
    document = tomlkit.parse(protocol.read_text())
    del document["strategies"]["si"]
    protocol.write_text(tomlkit.dumps(document))
    monkeypatch.setattr(cfg, "PROTOCOL_DIR", folder)
    lines = untuned(plan_args(root, tmp_path), ["naive", "ewc", "si"])
    assert len(lines) == 1 and "si runs mnist class-il on its declared defaults (si_lambda=1.0)" in lines[0]
    records = []
    for name in ("si", "ewc", "naive"):
        record = json.loads(json.dumps(_record(name)))
        records.append(record)
    labels = list(report.summary_frame(records)["label"])
    table = report.markdown_table(report.summary_frame(records))
    assert "si + replay‡" in table and "ewc + replay‡" not in table and "naive‡" not in table, labels


def _record(strategy: str, code: str | None = None, **config) -> dict:
    from bench import report

    return {"status": "ok", "error": None, "shared_replay": strategy != "naive",
            "config": {"dataset": "mnist", "scenario": "class-il", "strategy": strategy, "seed": 0,
                       "memory": 200 if strategy != "naive" else 0, "epochs": 4, "hash": f"h{strategy}", **config},
            "acc_matrix": [[1.0, None], [0.8, 0.9]],
            "metrics": {"final_acc": 0.85, "avg_inc_acc": 0.9, "forgetting": 0.2, "bwt": -0.2},
            "time_s": 1.0, "device": "cpu", "code": code or report.current_code(strategy)}


def test_the_untuned_mark_reads_a_protocol_again_once_it_is_rewritten(tmp_path, monkeypatch):
    import os

    import tomlkit

    from bench import config as cfg
    from bench.summary import on_defaults

    folder = tmp_path / "protocols"
    shutil.copytree(cfg.PROTOCOL_DIR, folder)
    monkeypatch.setattr(cfg, "PROTOCOL_DIR", folder)
    protocol = folder / "mnist-class-il.toml"
    assert not on_defaults("mnist", "class-il", "si", 200)  # the committed protocol tunes si
    document = tomlkit.parse(protocol.read_text())
    del document["strategies"]["si"]
    protocol.write_text(tomlkit.dumps(document))
    stat = protocol.stat()
    os.utime(protocol, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a later version of the file
    assert on_defaults("mnist", "class-il", "si", 200)


def test_prune_lists_unplanned_and_old_code_records_and_deletes_only_with_yes(root, tmp_path, capsys):
    from bench.records import write_json_atomic

    results = tmp_path / "results"
    cells, _ = cli.plan(plan_args(root, results, "--strategies", "ewc,naive"))
    for cell, _ in cells:  # the planned cells, by the current code
        write_json_atomic(cell.path, {**_record(cell.config["strategy"]), "config": cell.config, "code": cell.code})
    ewc = next(c for c, _ in cells if c.config["strategy"] == "ewc")
    retuned = {**ewc.config, "params": {**ewc.config["params"], "lambda": 1.0}, "hash": "0123456789ab"}
    write_json_atomic(results / "runs" / "old_setting.json", {**_record("ewc"), "config": retuned, "code": ewc.code})
    write_json_atomic(results / "runs" / "old_code.json", {**_record("ewc"), "config": ewc.config, "code": "0" * 16})
    before = sorted(p.name for p in (results / "runs").glob("*.json"))

    assert cli.main(["prune", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "old_setting.json: no protocol plans its configuration" in out and "old_code.json: made by older code" in out
    assert out.count("would delete") == 2
    assert sorted(p.name for p in (results / "runs").glob("*.json")) == before  # a dry run

    assert cli.main(["prune", "--results", str(results), "--yes"]) == 0
    after = sorted(p.name for p in (results / "runs").glob("*.json"))
    assert after == sorted(set(before) - {"old_setting.json", "old_code.json"})


FINGERPRINTS = """
import json
from bench import registry
from bench.provenance import code_fingerprint
print(json.dumps({n: code_fingerprint(i.module.__name__) for n, i in registry.strategies().items()}))
"""


def test_adding_a_strategy_and_its_sections_changes_no_other_fingerprint(tmp_path):
    """A copy of the project gains a strategy file, protocol sections and a place in the display order."""
    copy = tmp_path / "project"
    for part in ("bench", "strategies"):
        shutil.copytree(REPO_ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))

    def fingerprints():
        out = subprocess.run([sys.executable, "-c", FINGERPRINTS], cwd=copy, capture_output=True, text=True,
                             check=True).stdout
        return json.loads(out)

    from bench.provenance import code_files

    for info in registry.strategies().values():  # the display order is outside every cell's code
        assert REPO_ROOT / "bench" / "display.py" not in code_files(info.module.__name__)
    before = fingerprints()
    (copy / "strategies" / "newmethod.py").write_text(
        '"""A new method."""\nfrom bench.settings import Setting\n\nSCENARIOS = ("class-il",)\nMEMORY = "shared"\n'
        'SETTINGS = {"alpha": Setting(1.0)}\n\n\ndef build(ctx):\n    return ctx.template()\n')
    protocol = copy / "bench" / "protocols" / "mnist-class-il.toml"
    protocol.write_text(protocol.read_text() + "\n[strategies.newmethod]\nalpha = 2.0\n\n[tune.newmethod]\n"
                        "alpha = [1.0, 2.0]\n")
    display = copy / "bench" / "display.py"
    display.write_text(display.read_text().replace('ORDER = ("naive", ', 'ORDER = ("naive", "newmethod", '))
    after = fingerprints()
    assert "newmethod" in after
    assert {n: after[n] for n in before} == before
