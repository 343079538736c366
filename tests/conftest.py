"""Shared test setup: the repository on sys.path, tiny data roots, running the CLI, killing a cell's worker.

`pytest` (not only `python -m pytest`) must find the `bench` package, which is
not installed: the repository root goes first on sys.path.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fakedata import make_data_root  # noqa: E402  (tests/ is on sys.path: pytest's rootdir insertion)

# Small enough that a cell trains in about a second; the first cell of a process
# pays for importing torch and Avalanche in the fork server.
FAST = ["--epochs", "1", "--set", "batch_size=16", "--set", "eval_batch_size=256"]


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory) -> Path:
    """BENCH_CACHE_DIR in a temporary folder, for this process and the ones it starts.

    Set for the rest of the session: the fork server that runs cells in-process
    inherits the environment once, when it starts.
    """
    cache = tmp_path_factory.mktemp("bench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory, bench_cache) -> Path:
    """A data root with a tiny MNIST (20 training and 5 test images per digit); do not modify it."""
    return make_data_root(tmp_path_factory.mktemp("mnist"), ("mnist",),
                          mnist={"n_train_per_class": 20, "n_test_per_class": 5})


@pytest.fixture
def bench_env(bench_cache) -> dict[str, str]:
    """Environment for `python -m bench` subprocesses."""
    env = dict(os.environ)
    env["BENCH_CACHE_DIR"] = str(bench_cache)
    env["PYTHONWARNINGS"] = "ignore"
    env.pop("BENCH_DATA_ROOT", None)
    return env


def bench_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def run_bench(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` from the repository root, output captured."""
    return subprocess.run(bench_command(*args), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def records(results: Path) -> dict[str, dict]:
    """The records under results/runs by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))}


def leftovers(results: Path) -> list[str]:
    """Temporary files left in results/runs (there must be none after a run ends)."""
    return sorted(p.name for p in (results / "runs").glob("*.tmp")) if (results / "runs").is_dir() else []


def cell_workers() -> list[psutil.Process]:
    """Processes started by this process's children: the cells' workers under the fork server."""
    out = []
    for child in psutil.Process().children():
        try:
            out.extend(child.children())
        except psutil.NoSuchProcess:
            pass
    return out


@contextmanager
def killing_first_worker(before_kill: Callable[[], None] = lambda: None,
                         timeout: float = 120) -> Iterator[list[int]]:
    """While the block runs, SIGKILL the first cell worker that has lived 0.3 s (as the kernel's
    OOM killer would), after calling `before_kill`; yields the list of killed pids (empty when
    no worker was seen)."""
    killed: list[int] = []
    stop = threading.Event()

    def kill_first() -> None:
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            for proc in cell_workers():
                try:
                    if time.time() - proc.create_time() > 0.3:
                        before_kill()
                        os.kill(proc.pid, signal.SIGKILL)
                        killed.append(proc.pid)
                        return
                except (psutil.NoSuchProcess, ProcessLookupError):
                    pass
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first, daemon=True)
    killer.start()
    try:
        yield killed
    finally:
        stop.set()
        killer.join()
