"""scripts/grid_cost.py: cell-hours per dataset, table and method, and CPU ratios to naive, from generated records."""
from __future__ import annotations

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
    found = re.search(rf"^{part}\s+omniglot\s+{table}\s+{method}\s+(.*)$", stdout, re.M)
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
