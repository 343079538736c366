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

from bench import cli, docpages
from bench import config as cfg
from bench import registry
from bench.protocol_writeback import edit_protocol
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


def tune_args(root, results, *extra, fast=(*FAST, "--write-overridden")):
    """A tune of EWC on the small grid; FAST shortens the protocol, so the write-back needs --write-overridden."""
    return ["tune", "--scenario", "class-il", "--strategies", "ewc", "--data-root", str(root),
            "--results", str(results), "--no-download", "--jobs", "1", *fast, *extra]


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


def test_a_new_key_goes_above_the_comments_that_introduce_the_next_section():
    text = ("[strategies.ewc]\nlambda = 1.0\n\n# --- the search spaces\n# (two lines)\n"
            "[tune.ewc]\nlambda = [1.0, 2.0]\n")
    new = edit_protocol(text, "strategies", "ewc", {"lambda": 2.0, "mode": "online"}, "tuned")
    assert new == ("[strategies.ewc]\nlambda = 2.0 # tuned\nmode = \"online\" # tuned\n"
                   "tuned = [\"lambda\", \"mode\"]\n\n# --- the search spaces\n# (two lines)\n"
                   "[tune.ewc]\nlambda = [1.0, 2.0]\n")


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
    assert f"lambda = {best}" in text and "python -m bench tune" in text
    # marked tuned beside what earlier searches of the section chose (the committed one tuned mode too)
    assert "lambda" in cfg.load_protocol("mnist", "class-il")["strategies"]["ewc"]["tuned"]
    config = plan_config(root, tmp_path / "run")  # the next run uses the chosen value, and says so
    assert config["params"]["lambda"] == best and "lambda" in config["tuned"] and config["holdout"] == 0.0

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
    # (both sets from the registry, so that adding a method changes nothing here)
    known = registry.strategies()
    needs_memory = {n for n, i in known.items() if "class-il" in i.scenarios
                    and i.why_not("mnist", "class-il", 0) and not i.why_not("mnist", "class-il", 200)}
    task_il_only = {n for n, i in known.items() if "class-il" not in i.scenarios}
    # and the Class-IL rows this protocol does not declare at any budget (a row at IB's size without a width)
    undeclared = {n for n, i in known.items() if "class-il" in i.scenarios
                  and i.why_not("mnist", "class-il", 0) and i.why_not("mnist", "class-il", 200)}
    assert needs_memory >= {"replay", "icarl"} and task_il_only >= {"pnn", "pnc"}
    assert set(reasons) == needs_memory | task_il_only | undeclared
    assert all("task-il only" in reasons[name] for name in task_il_only)
    assert all("memory" in reasons[name] for name in needs_memory)
    planned = {cell.config["strategy"] for cell, _ in cells}
    assert {"naive", "joint", "ewc", "lwf", "ib"} <= planned
    assert all(cell.config["memory"] == 0 for cell, _ in cells)


# ---------------------------------------------------------------- write-back safety (issue 29, item 2)

def _replace_ewc_section(path: Path, form: str) -> None:
    text = path.read_text()
    start = text.index("[strategies.ewc]")
    end = text.index("[strategies.lwf]")
    path.write_text(text[:start] + form + "\n\n" + text[end:])


@pytest.mark.parametrize("form", ["[strategies]\newc = { lambda = 1000000.0 }",
                                  "[strategies]\newc.lambda = 1000000.0"], ids=["inline-table", "dotted-keys"])
def test_a_section_tune_cannot_edit_exits_2_before_any_trial(protocols, mnist_root, tmp_path, capsys, form):
    path = protocols / "mnist-class-il.toml"
    _replace_ewc_section(path, form)
    before = path.read_bytes()
    assert cli.main(tune_args(mnist_root, tmp_path / "results")) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "[strategies.ewc] is written as an inline table" in err and "--no-write" in err
    assert not list((tmp_path / "results").glob("tune/runs/*.json"))  # nothing trained
    assert path.read_bytes() == before
    # --no-write needs no edit: the same protocol tunes
    assert cli.main(tune_args(mnist_root, tmp_path / "results", "--budget", "1", "--no-write")) == 0


def test_a_read_only_protocol_exits_2_before_any_trial(protocols, mnist_root, tmp_path):
    """As root the file mode alone stops nothing: the tune runs without CAP_DAC_OVERRIDE (setpriv)."""
    import os
    import subprocess
    import sys

    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop the capability that lets root write a read-only file")
    path = protocols / "mnist-class-il.toml"
    path.chmod(0o444)
    script = ("import sys; from pathlib import Path; from bench import config as cfg; from bench import cli; "
              f"cfg.PROTOCOL_DIR = Path({str(protocols)!r}); sys.exit(cli.main(sys.argv[1:]))")
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"] \
        if os.geteuid() == 0 else []
    done = subprocess.run([*drop, sys.executable, "-c", script, *tune_args(mnist_root, tmp_path / "results")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=600)
    assert done.returncode == cli.EXIT_USAGE, done.stderr
    assert f"cannot write the winners into {path}" in done.stderr and "Permission denied" in done.stderr
    assert not list((tmp_path / "results").glob("tune/runs/*.json"))


def test_a_point_run_refuses_is_not_run_and_cannot_win(protocols, mnist_root, tmp_path, capsys):
    path = protocols / "mnist-class-il.toml"  # kept class means and cosine scoring conflict
    path.write_text(path.read_text() + '\n[tune.memory0.ib]\nncm_normalize = [false, true]\n'
                    '\n[memory0.ib]\nncm_means = "kept"\nncm_normalize = false\n')
    args = [*tune_args(mnist_root, tmp_path / "results", "--memory", "0")]
    args[args.index("ewc")] = "ib"
    assert cli.main(args) == 0
    out, err = capsys.readouterr()
    assert "not run: ib ncm_normalize=True: `run` refuses it" in err and "1 not run" in err
    assert len(list((tmp_path / "results" / "tune" / "runs").glob("*.json"))) == 1
    assert "best ncm_normalize=False" in out
    assert cfg.load_protocol("mnist", "class-il")["memory0"]["ib"]["ncm_normalize"] is False


def _trial_path(root, results: Path, **point) -> Path:
    """Where the trial of `point` (EWC, seed 0, the FAST settings) keeps its record."""
    from bench.records import record_path

    config = plan_config(root, results / "tune", *FAST, "--holdout", "0.1")
    config["params"].update(point)
    config.pop("tuned", None)
    config["hash"] = cfg.config_hash(config)
    return record_path(results / "tune", config)


def test_no_winner_is_written_while_a_trial_is_held_by_another_run(protocols, mnist_root, tmp_path, capsys):
    from bench import claims

    results = tmp_path / "results"
    path = protocols / "mnist-class-il.toml"
    before = path.read_bytes()
    held = claims.claim(_trial_path(mnist_root, results, **{"lambda": 1000.0}), run_id="otherrun")
    try:
        assert cli.main(tune_args(mnist_root, results, "--budget", "3")) == cli.EXIT_FAILED
    finally:
        held.release()
    out, err = capsys.readouterr()
    assert "ewc: nothing written: 1 of 3 trial(s) have no score: lambda=1000.0 (seed 0 running elsewhere)" in err
    assert "best lambda=" not in out
    assert path.read_bytes() == before
    assert cli.main(tune_args(mnist_root, results, "--budget", "3")) == 0  # once it is free: written
    assert "1 trial(s) to run, 2 already done" in capsys.readouterr().err
    assert path.read_bytes() != before


def test_a_winner_under_overridden_settings_is_written_only_with_the_flag(protocols, mnist_root, tmp_path, capsys):
    path = protocols / "mnist-class-il.toml"
    before = path.read_bytes()
    assert cli.main(tune_args(mnist_root, tmp_path / "results", "--budget", "1", fast=FAST)) == 0
    err = capsys.readouterr().err
    assert "will not be written: the trials run under --set batch_size=16, --set eval_batch_size=256, " \
           "--epochs 1" in err
    assert path.read_bytes() == before
    assert cli.main(tune_args(mnist_root, tmp_path / "results", "--budget", "1")) == 0  # with --write-overridden
    assert "(not the protocol's settings)" in path.read_text() and "under --set batch_size=16" in path.read_text()


def test_a_flat_grid_warns_and_is_not_marked_tuned(protocols, mnist_root, tmp_path, capsys):
    """EWC's penalty at lambda 0 and 1e-12 changes nothing: every trial scores the same."""
    path = protocols / "mnist-class-il.toml"
    path.write_text(path.read_text().replace("lambda = [1.0, 1e6, 1e3]", "lambda = [0.0, 1e-12]"))
    assert cli.main(tune_args(mnist_root, tmp_path / "results")) == 0
    err = capsys.readouterr().err
    assert "warning: ewc: flat grid: all 2 trials within 0.00 points" in err and "may have no effect" in err
    ewc = cfg.load_protocol("mnist", "class-il")["strategies"]["ewc"]
    assert "lambda" not in ewc["tuned"]  # the value stays, but not as a choice
    line = next(line for line in path.read_text().splitlines() if line.startswith("lambda = 0.0"))
    assert "flat grid" in line and "tuned 20" not in line
    # docs/methods.md says so rather than "not tuned yet"
    flat = docpages._flat_keys("mnist", "class-il")[("strategies", "ewc")]
    space = cfg.load_protocol("mnist", "class-il")["tune"]["ewc"]
    assert "lambda 0 (flat grid over {0, 1e-12}: not a choice)" in docpages.settings_text(ewc, space, flat)


def test_the_ledger_counts_a_grid_move_as_trials(protocols, mnist_root, tmp_path, capsys):
    from bench import ledger

    results = tmp_path / "results"
    path = protocols / "mnist-class-il.toml"
    path.write_text(path.read_text().replace("lambda = [1.0, 1e6, 1e3]", "lambda = [1.0, 1e3]"))
    assert cli.main(tune_args(mnist_root, results)) == 0
    path.write_text(path.read_text().replace("lambda = [1.0, 1e3]", "lambda = [1e3, 1e6]"))  # moved up an edge
    assert cli.main(tune_args(mnist_root, results)) == 0
    assert "1 trial(s) to run, 1 already done" in capsys.readouterr().err
    [line] = [x for x in ledger.ledger(results, ledger.current_protocols()) if x.strategy == "ewc"]
    assert (line.trials, line.off_grid, line.one_search) == (3, 1, 2)  # the point left behind still counts
    assert cli.main(["tune", "--ledger", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "## mnist class-il" in out and "| 200 | ewc | 3 | 0 | 3 | 1 | 1 | 1 | 2 | 1 | 0 | 0 |" in out
    assert "| 200 | ewc | 3 | 0 | 3 | 1 | 1 | 1 | 2 | 1 | 0 | 0 |" in \
        (results / "tables" / "tuning_ledger.md").read_text()  # the same table, written under tables/


def test_a_protocol_with_a_toml_syntax_error_exits_2_in_run_and_list(protocols, mnist_root, tmp_path, capsys):
    path = protocols / "mnist-class-il.toml"
    path.write_text("memory = = 200\n" + path.read_text())
    assert cli.main(["list"]) == cli.EXIT_USAGE
    assert f"{path} is not valid TOML" in capsys.readouterr().err
    assert cli.main(["run", "--scenario", "class-il", "--data-root", str(mnist_root), "--results",
                     str(tmp_path / "r"), "--no-download"]) == cli.EXIT_USAGE
    assert f"{path} is not valid TOML" in capsys.readouterr().err


def test_a_replaced_trial_is_still_counted_as_a_look(protocols, mnist_root, tmp_path, capsys):
    """A trial rerun by newer code, or with --force, replaces its record; the replaced one was a look
    at held-out data all the same and stays in the ledger (a line of replaced_looks.jsonl)."""
    import json

    from bench import ledger
    from bench.records import REPLACED_LOOKS

    results = tmp_path / "results"
    path = protocols / "mnist-class-il.toml"
    path.write_text(path.read_text().replace("lambda = [1.0, 1e6, 1e3]", "lambda = [1.0, 1e3]"))
    assert cli.main(tune_args(mnist_root, results)) == 0

    def trials() -> int:
        [line] = [x for x in ledger.ledger(results, ledger.current_protocols()) if x.strategy == "ewc"]
        return line.trials

    assert trials() == 2
    records = sorted((results / "tune" / "runs").glob("*.json"))
    older = json.loads(records[0].read_text())
    older["code"] = "made-by-older-code"  # as if the code had changed since: the trial is not done
    records[0].write_text(json.dumps(older))
    assert cli.main(tune_args(mnist_root, results)) == 0
    assert "1 trial(s) to run, 1 already done" in capsys.readouterr().err
    assert trials() == 3
    assert cli.main(tune_args(mnist_root, results, "--force")) == 0
    assert trials() == 5
    kept = [json.loads(x) for x in (results / "tune" / "runs" / REPLACED_LOOKS).read_text().splitlines()]
    assert [k["code"] for k in kept].count("made-by-older-code") == 1 and len(kept) == 3


def test_top_up_gives_a_method_short_of_looks_the_difference_as_more_seeds(protocols, mnist_root, tmp_path, capsys):
    """EWC has 2 looks, LwF 5 (records made here): --top-up scores EWC's 2 points over seeds 0-2,
    6 looks, at least LwF's 5; the same command again asks for the same seeds and trains nothing."""
    import json

    from bench import ledger

    results = tmp_path / "results"
    assert cli.main(tune_args(mnist_root, results, "--budget", "2")) == 0
    runs = results / "tune" / "runs"
    trial = json.loads(next(runs.glob("*.json")).read_text())
    for i in range(5):  # another method's looks at the same protocol and memory
        trial["config"].update(strategy="lwf", params={"alpha": float(i)}, hash=f"lwf{i}")
        (runs / f"lwf_{i}.json").write_text(json.dumps(trial))
    capsys.readouterr()
    assert cli.main(tune_args(mnist_root, results, "--budget", "2", "--top-up")) == 0
    err = capsys.readouterr().err
    assert "ewc: 2 look(s) so far, the most-tuned other 5 before top-ups: seeds 0-2" in err
    assert "4 trial(s) to run, 2 already done" in err
    [line] = [x for x in ledger.ledger(results) if x.strategy == "ewc"]
    assert line.trials == 6
    assert sorted({json.loads(p.read_text())["config"]["seed"] for p in runs.glob("mnist_*ewc*.json")}) == [0, 1, 2]
    assert cli.main(tune_args(mnist_root, results, "--budget", "2", "--top-up")) == 0
    err = capsys.readouterr().err
    assert "ewc: 6 look(s) so far, the most-tuned other 5 before top-ups: seeds 0-2" in err and "0 trial(s) to run" in err


def test_a_top_up_rerun_does_not_raise_its_target_with_the_other_methods_top_ups(protocols, mnist_root, tmp_path,
                                                                                  capsys):
    """Whole seeds overshoot: SI has 5 looks (records made here), EWC 2 points and an older look, LwF 2
    points. The top-up brings EWC to 1 + 2 seeds x 2 = 5 and LwF to 3 seeds x 2 = 6. Rerun (as after an
    interruption), EWC must not chase LwF's 6: the target is the most looks before top-ups, 5."""
    import json

    from bench import ledger

    path = protocols / "mnist-class-il.toml"
    path.write_text(path.read_text() + "\n[tune.lwf]\nalpha = [0.5, 1.0]\n")
    results = tmp_path / "results"
    both = ("--strategies", "ewc,lwf", "--budget", "2")
    assert cli.main(tune_args(mnist_root, results, *both)) == 0
    runs = results / "tune" / "runs"
    trial = json.loads(next(runs.glob("*ewc*.json")).read_text())
    trial["config"].update(params={"lambda": 7.0}, hash="older")  # an earlier search's look at EWC
    (runs / "ewc_older.json").write_text(json.dumps(trial))
    for i in range(5):
        trial["config"].update(strategy="si", params={"lambda": float(i)}, hash=f"si{i}")
        (runs / f"si_{i}.json").write_text(json.dumps(trial))

    def trials() -> dict[str, int]:
        return {x.strategy: x.trials for x in ledger.ledger(results)}

    for _ in range(2):
        assert cli.main(tune_args(mnist_root, results, *both, "--top-up")) == 0
        err = capsys.readouterr().err
        assert "the most-tuned other 5 before top-ups: seeds 0-1" in err  # EWC's
        assert "the most-tuned other 5 before top-ups: seeds 0-2" in err  # LwF's
        assert trials() == {"ewc": 5, "lwf": 6, "si": 5}
    assert "0 trial(s) to run" in err


def test_the_ledger_counts_a_top_ups_extra_seeds_not_the_search_it_ran_in_passing(tmp_path):
    """A top-up run before its search trains the seed-0 points too: those are the search's looks
    (they count towards others' targets); only seeds 1, 2, ... are the top-up's."""
    import json

    from bench import ledger

    runs = tmp_path / "tune" / "runs"
    runs.mkdir(parents=True)
    for seed in (0, 1, 2):
        config = {"dataset": "mnist", "scenario": "class-il", "memory": 200, "strategy": "ewc", "seed": seed,
                  "holdout": 0.1, "epochs": 4, "params": {"lambda": 1.0}}
        (runs / f"ewc_{seed}.json").write_text(json.dumps(
            {"status": "ok", "config": config, "command": "python -m bench tune --scenario class-il --top-up"}))
    [line] = ledger.ledger(tmp_path)
    assert (line.trials, line.top_up) == (3, 2)
