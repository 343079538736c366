"""scripts/benchmark_speed.py --ib: IB's cell against the one that trains on the same data."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO_ROOT


def test_ib_ratio_pairs_class_il_ib_with_replay(mnist_root, bench_env):
    done = subprocess.run([sys.executable, "scripts/benchmark_speed.py", "--ib", "--datasets", "mnist",
                           "--epochs", "1", "--data-root", str(mnist_root)], cwd=REPO_ROOT, env=bench_env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = re.search(r"mnist\s+class-il\s+1 epoch\(s\)\s+ib\s+([\d.]+) s\s+replay\s+([\d.]+) s\s+"
                     r"ib/replay ([\d.]+)", done.stdout)
    assert line, done.stdout
    ib, replay, ratio = (float(v) for v in line.groups())
    # the times are printed to 0.01 s, the ratio to 0.01
    assert ib > 0 and replay > 0 and abs(ratio - ib / replay) <= 0.006 + ratio * 0.006 * (1 / ib + 1 / replay)


def test_grid_mnist_stage_runs_its_three_tables_and_resumes(mnist_root, bench_env, tmp_path):
    env = {**bench_env, "DATA_ROOT": str(mnist_root), "MNIST_SEEDS": "3"}
    cmd = ["bash", "scripts/grid.sh", "mnist", "--", "--results", str(tmp_path), "--strategies", "naive,ewc",
           "--epochs", "1", "--jobs", "1"]
    first = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "tables").glob("*.md"))
    assert names == ["headline.md", "mnist_class-il.md", "mnist_class-il_memory0.md", "mnist_task-il.md",
                     "reference.md", "separated.md", "sizes.md"]
    # naive is one cell per scenario and seed (its memory-free row is the same run); ewc has two in Class-IL
    assert len(list((tmp_path / "runs").glob("*.json"))) == 3 * (1 + 2 + 2)
    again = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stderr.count("already done: ") >= 3 * 4, again.stderr[-3000:]


def test_grid_tune_stage_searches_each_protocol_then_tops_it_up(mnist_root, bench_env, tmp_path):
    """tune-mnist: Class-IL at the protocol's memory and at 0, then Task-IL; each search followed by
    its --top-up (here EWC is the only method: it is short of no one, so the top-up adds no trial)."""
    env = {**bench_env, "DATA_ROOT": str(mnist_root)}
    cmd = ["bash", "scripts/grid.sh", "tune-mnist", "--", "--results", str(tmp_path), "--strategies", "ewc",
           "--epochs", "1", "--budget", "2", "--jobs", "1", "--no-write"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    commands = [line for line in done.stderr.splitlines() if line.startswith("+ python -m bench tune")]
    assert len(commands) == 6 and ["--top-up" in c for c in commands] == [False, True] * 3
    assert done.stderr.count("ewc: 2 look(s) so far, the most-tuned other 0 before top-ups: seeds 0-0") == 3
    assert len(list((tmp_path / "tune" / "runs").glob("*.json"))) == 3 * 2
    halves = cmd[:2] + ["search-mnist", "top-up-mnist"] + cmd[3:]  # every search first, then the top-ups
    done = subprocess.run(halves, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    commands = [line for line in done.stderr.splitlines() if line.startswith("+ python -m bench tune")]
    assert done.returncode == 0 and ["--top-up" in c for c in commands] == [False] * 3 + [True] * 3
    assert "--memory 0" in commands[1] and "--memory 0" in commands[4] and "task-il" in commands[5]


def test_grid_refuses_an_unknown_stage(bench_env):
    done = subprocess.run(["bash", "scripts/grid.sh", "cifar"], cwd=REPO_ROOT, env=bench_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown stage cifar" in done.stderr
