"""scripts/grid_cost.py: cell-hours per dataset, table and method, and CPU ratios to naive, from generated records."""
from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys

from conftest import REPO_ROOT


def record(strategy: str, seed: int, cpu_s: float, time_s: float, memory: int = 0, scenario: str = "task-il",
           epochs: int = 10) -> dict:
    config = {"dataset": "omniglot", "scenario": scenario, "strategy": strategy, "seed": seed, "memory": memory,
              "epochs": epochs, "holdout": 0, "hash": f"{strategy}{memory}{epochs}"}
    return {"status": "ok", "config": config, "cpu_s": cpu_s, "time_s": time_s}


def write(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(records):
        (folder / f"r{i}.json").write_text(json.dumps(r))


def run(results):
    return subprocess.run([sys.executable, "scripts/grid_cost.py", "--results", str(results)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def line(stdout: str, part: str, table: str, method: str) -> list[str]:
    """The figures after a listing's (part,) dataset, table and method; part "" for the estimate."""
    found = re.search(rf"^{part + ' +' if part else ''}omniglot\s+{table}\s+{method}\s+(.*)$", stdout, re.M)
    assert found, stdout
    return found.group(1).split()


def test_hours_and_ratios_to_naive_on_the_same_stream(tmp_path):
    write(tmp_path / "runs", [
        record("naive", 0, 100.0, 120.0), record("naive", 1, 200.0, 200.0),
        record("lwf", 0, 300.0, 360.0), record("lwf", 1, 300.0, 300.0),  # 3x and 1.5x naive of its seed
        record("lwf", 2, 50.0, 50.0),  # no naive for seed 2: counted in the hours, not in the ratio
        record("lwf", 0, 1000.0, 1000.0, epochs=1),  # another stream (1 epoch): no naive there
        record("replay", 0, 720.0, 720.0, memory=200, scenario="class-il"),
    ])
    write(tmp_path / "tune" / "runs", [record("lwf", 0, 3600.0, 7200.0)])
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert line(done.stdout, "grid", "task-il memory 0", "naive") == ["2", f"{320 / 3600:.2f}", f"{300 / 3600:.2f}",
                                                                    "1.00"]
    cells, wall, cpu, ratio = line(done.stdout, "grid", "task-il memory 0", "lwf")
    assert (cells, wall, cpu) == ("4", f"{1710 / 3600:.2f}", f"{1650 / 3600:.2f}")
    assert ratio == "2.25"  # mean of 3.0 and 1.5: per seed, on the same epochs
    assert line(done.stdout, "grid", "class-il memory 200", "replay") == ["1", "0.20", "0.20"]  # no naive there
    assert "grid total: 7 cells, 0.76 cell-hours (wall), 0.74 CPU hours" in done.stdout
    assert line(done.stdout, "tune", "task-il memory 0", "lwf") == ["1", "2.00", "1.00"]
    assert "tune total: 1 cells, 2.00 cell-hours (wall), 1.00 CPU hours" in done.stdout


def test_a_folder_without_records_is_refused(tmp_path):
    done = run(tmp_path / "nothing")
    assert done.returncode == 2 and "no records" in done.stderr


def test_estimate_plans_every_method_and_prices_it_from_cells_at_the_protocols_epochs(tmp_path):
    """--estimate: every method that applies to the table is planned at the seeds asked; a method is
    priced by its grid cells at the protocol's epochs, else its tuning trials there, else unmeasured."""
    from bench import config as cfg
    from bench import registry
    from bench.tune import search_spaces

    write(tmp_path / "runs", [
        record("naive", 0, 300.0, 360.0), record("naive", 1, 600.0, 720.0),  # 0.15 h a cell on average
        record("ewc", 0, 900.0, 900.0, epochs=5),  # another length: not the protocol's 10 epochs
    ])
    trial = record("lwf", 0, 1700.0, 1800.0)
    trial["config"]["holdout"] = 0.1
    write(tmp_path / "tune" / "runs", [trial])
    done = subprocess.run([sys.executable, "scripts/grid_cost.py", "--results", str(tmp_path),
                           "--estimate", "omniglot-task-il=3"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    planned = re.findall(r"^omniglot\s+task-il memory 0\s+(\S+)\s+3\s", done.stdout, re.M)
    protocol = cfg.load_protocol("omniglot", "task-il")
    applies = sorted(n for n, info in registry.strategies().items()
                     if info.why_not("omniglot", "task-il", 0, protocol.get("backbone")) is None)
    assert sorted(planned) == applies
    assert line(done.stdout, "", "task-il memory 0", "naive") == ["3", "0.150", "0.45", "grid", "cells", "(2)"]
    assert line(done.stdout, "", "task-il memory 0", "lwf") == ["3", "0.500", "1.50", "tuning", "trials", "(1)"]
    assert line(done.stdout, "", "task-il memory 0", "ewc") == ["3", "?", "?", "unmeasured"]
    measured = 0.45 + 1.50
    assert f"grid: {3 * len(applies)} cells, {measured:.1f} cell-hours measured" in done.stdout
    budget, spaces = search_spaces(protocol, registry.strategies(), 0)
    lwf_trials = min(budget, len(list(itertools.product(*spaces["lwf"].values()))))
    # its one trial is by other code: the whole search is left, priced at the trial's 0.5 h
    assert tuning_line(done.stdout, "lwf") == [str(lwf_trials), "0", "0.500", f"{lwf_trials * 0.5:.2f}"]


def tuning_line(stdout: str, method: str) -> list[str]:
    """The figures of a method's line in the estimate's tuning listing: search, top-up, h/trial, cell-h."""
    listing = stdout[stdout.index("(tuning left)"):]
    found = re.search(rf"^omniglot\s+task-il memory 0\s+{method}\s+(.*)$", listing, re.M)
    assert found, stdout
    return found.group(1).split()


def test_the_tuning_left_is_todays_search_then_the_top_up_that_evens_out_the_looks(tmp_path):
    """LwF's search is done by today's code (8 points at the protocol's 10 epochs), beside 8 looks at 5
    epochs by older code and one top-up trial: 17 looks, 16 before top-ups. EWC has none: its search
    (8 of its points) is left, then a top-up of one more seed to reach LwF's 16 (not 17: a top-up
    does not chase another's top-up); LwF needs nothing."""
    from bench import config as cfg
    from bench import registry
    from bench.summary import current_code
    from bench.tune import search_spaces, trial_points

    budget, spaces = search_spaces(cfg.load_protocol("omniglot", "task-il"), registry.strategies(), 0)
    trials = []
    for i, point in enumerate(trial_points(spaces["lwf"], budget, 0)):
        assert i < 8
        trials.append(record("lwf", 0, 300.0, 360.0))
        trials[-1]["config"].update(params=point, hash=f"lwf{i}")
        trials[-1].update(code=current_code("lwf"), command="python -m bench tune --dataset omniglot")
    for i in range(8):
        trials.append(record("lwf", 0, 100.0, 100.0, epochs=5))
        trials[-1]["config"].update(params={"alpha": float(i)}, hash=f"old{i}")
        trials[-1].update(code="older", command="python -m bench tune --dataset omniglot --epochs 5")
    trials.append(json.loads(json.dumps(trials[0])))
    trials[-1]["config"].update(seed=1, hash="lwf-seed1")
    trials[-1]["command"] += " --top-up"
    for trial in trials:
        trial["config"]["holdout"] = 0.1
    write(tmp_path / "tune" / "runs", trials)
    done = subprocess.run([sys.executable, "scripts/grid_cost.py", "--results", str(tmp_path),
                           "--estimate", "omniglot-task-il=1"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert not re.search(r"\slwf\s", done.stdout[done.stdout.index("(tuning left)"):])  # nothing left: not listed
    assert tuning_line(done.stdout, "ewc") == ["8", "8", "?", "?"]  # 2 seeds of 8 points: 16


def test_an_estimate_of_a_protocol_that_does_not_exist_is_refused(tmp_path):
    write(tmp_path / "runs", [record("naive", 0, 1.0, 1.0)])
    done = subprocess.run([sys.executable, "scripts/grid_cost.py", "--results", str(tmp_path),
                           "--estimate", "omniglot-sideways=3"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "no protocol for omniglot sideways" in done.stderr
