"""The Dask executor: same records as the local pool, faults handled by Dask, nothing but 127.0.0.1.

A scheduler and workers started here as `dask scheduler` / `dask worker`
processes, the embedded LocalCluster, and a cluster whose workers this test
kills while they train. Cells train on the tiny fake MNIST for one epoch.
"""
from __future__ import annotations

import ctypes
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import psutil
import pytest
from conftest import REPO_ROOT, leftovers, records
from test_runner import NAIVE, _interrupt_after_first_record, assert_same_records, run_args

from bench import cli

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
from bench import dask_executor  # noqa: E402  (needs distributed)

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official:UserWarning",
                                        "ignore::DeprecationWarning", "ignore::ResourceWarning")

# What records of the same cell must agree on, whichever executor ran it.
SAME = ("status", "config", "acc_matrix", "metrics", "params", "extra_state_bytes", "data_checksums",
        "data_official", "device", "threads", "versions", "git_commit", "data_root")


def children() -> set[int]:
    """Processes this one started, less multiprocessing's resource tracker (it lives as long as we do)."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def assert_none_left(before: set[int], timeout: float = 30) -> None:
    """No process started since `before` outlives the run (a loaded machine reaps them slowly)."""
    deadline = time.monotonic() + timeout
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert children() - before == set()


@pytest.fixture(scope="module")
def local_results(mnist_root, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("local")
    assert cli.main(run_args(mnist_root, results, "--jobs", "2")) == 0
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hand_started(bench_cache):
    """`dask scheduler` and three `dask worker` processes on 127.0.0.1: two offer a fake GPU resource
    (K=2 processes sharing one device), one offers none. Stopped, and checked gone, at the end."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "BENCH_CACHE_DIR": str(bench_cache),
           "PYTHONWARNINGS": "ignore"}
    address = f"tcp://127.0.0.1:{free_port()}"
    common = dict(cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                  start_new_session=True)
    cli_dask = [sys.executable, "-m", "dask"]
    worker = [*cli_dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
              "--memory-limit", "0"]
    procs = [subprocess.Popen([*cli_dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                               "--no-dashboard"], **common)]
    try:
        procs.append(subprocess.Popen([*worker, "--nworkers", "2", "--resources", "FAKEGPU=0.5"], **common))
        procs.append(subprocess.Popen([*worker, "--nworkers", "1"], **common))
        with distributed.Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(3, timeout=120)
            gpu = {a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
                   if w["resources"].get("FAKEGPU")}
        yield address, gpu
    finally:
        for proc in procs[::-1]:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert not any(psutil.pid_exists(p.pid) for p in procs)


def test_hand_started_scheduler_gives_the_local_records(hand_started, local_results, mnist_root, tmp_path, capsys):
    address, _ = hand_started
    results = tmp_path / "dask"
    assert cli.main(run_args(mnist_root, results, "--executor", "dask", "--scheduler", address)) == 0
    assert_same_records(results, local_results, SAME)
    err = capsys.readouterr().err
    assert f"dask: 3 workers at {address}" in err and "finished: 2 ok, 0 failed" in err
    assert all(r["dask_worker"].startswith("tcp://127.0.0.1:") for r in records(results).values())
    # Done cells are never sent again.
    assert cli.main(run_args(mnist_root, results, "--executor", "dask", "--scheduler", address)) == 0
    assert "finished: 0 ok, 0 failed, 2 already done" in capsys.readouterr().err


def test_embedded_cluster_gives_the_local_records_and_leaves_no_process(local_results, mnist_root, tmp_path,
                                                                        capsys):
    before = children()
    results = tmp_path / "embedded"
    assert cli.main(run_args(mnist_root, results, "--executor", "dask", "--jobs", "2")) == 0
    assert_same_records(results, local_results, SAME)
    assert "2 workers at an embedded LocalCluster of 2 workers on 127.0.0.1" in capsys.readouterr().err
    assert_none_left(before)


def test_cells_that_need_a_gpu_go_to_workers_that_offer_one(hand_started, mnist_root, tmp_path):
    address, gpu_workers = hand_started
    args = cli.build_parser().parse_args(run_args(mnist_root, tmp_path, "--seeds", "4", strategies="naive"))
    cells = [cell for cell, _ in cli.plan(args)[0]]
    assert dask_executor.task_options("cuda", 2) == {"resources": {"GPU": 0.5}}
    assert dask_executor.task_options("cpu") == {}
    outcome = dask_executor.run_cells(cells, str(mnist_root), scheduler=address, progress=False,
                                      resource="FAKEGPU", cells_per_gpu=2)
    assert len(outcome.ok) == 4
    assert len(gpu_workers) == 2
    assert {r["dask_worker"] for r in records(tmp_path).values()} <= gpu_workers


def how_worker_allocates(dask_worker) -> dict:
    """On a worker: is a 4 MiB buffer mmapped on its own (glibc's mmap threshold stuck at 128 KiB)
    rather than taken from the heap, and is the statistical profiler sampling?"""
    class MallInfo2(ctypes.Structure):  # defined here: a ctypes class cannot travel to the worker
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                          "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    before = mallinfo2().hblkhd
    buffer = bytearray(4 * 2**20)
    mmapped = mallinfo2().hblkhd - before >= len(buffer)
    return {"environ": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "mmapped": mmapped,
            "profiling": "profile" in dask_worker.periodic_callbacks}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_workers_started_by_hand_allocate_like_the_local_pool(hand_started):
    """Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_ set, which freezes glibc's mmap
    threshold: every tensor above 128 KiB was mapped afresh, and cells ran about 1.6 times slower than
    in the local pool. Once the client has connected, large buffers come from the heap again and the
    profiler is off."""
    address, _ = hand_started
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    client = dask_executor.connect(address, 1)
    try:
        states = client.run(how_worker_allocates)
    finally:
        dask_executor.close(client)
    assert len(states) == 3
    for state in states.values():
        assert state == {"environ": "65536", "mmapped": False, "profiling": False}


def test_unreachable_scheduler_exits_2_naming_it(mnist_root, tmp_path, capsys):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    results = tmp_path / "r"
    assert cli.main(run_args(mnist_root, results, "--executor", "dask", "--scheduler", address)) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the Dask scheduler at {address}" in err
    assert not list((results / "runs").glob("*.json"))


def test_scheduler_without_dask_executor_is_a_usage_error(mnist_root, tmp_path, capsys):
    assert cli.main(run_args(mnist_root, tmp_path, "--scheduler", "tcp://127.0.0.1:1")) == 2
    assert "--scheduler needs --executor dask" in capsys.readouterr().err


def test_killed_workers_cell_is_retried_by_dask_then_failed_and_nothing_is_lost(mnist_root, tmp_path):
    """Once ewc has finished, the worker running naive is killed; Dask reruns naive on another
    worker, which is killed too: after allowed-failures + 1 = 2 deaths naive is recorded failed
    (KilledWorker). ewc's record stays, and no process is left."""
    # long enough that the second worker is still training naive when the killer comes for it
    args = cli.build_parser().parse_args(run_args(mnist_root, tmp_path, "--set", "strategies.naive.epochs=5000"))
    cells = {c.config["strategy"]: c for c, _ in cli.plan(args)[0]}
    before = children()
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                           dashboard_address=None, memory_limit=0)
    kills: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def killer():
        try:
            while not stop.is_set() and not cells["ewc"].path.exists():
                time.sleep(0.1)
            kill_while_running(cluster.scheduler_address, cells["naive"].config["hash"], kills, stop)
        except BaseException as exc:  # a broken killer must fail the test, not let naive train on
            errors.append(exc)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        outcome = dask_executor.run_cells(list(cells.values()), str(mnist_root),
                                          scheduler=cluster.scheduler_address, progress=False)
    finally:
        stop.set()
        thread.join()
        cluster.close()
    assert not errors
    # the killer's SIGKILL took at least one worker under naive; Dask's own count of deaths (two
    # different workers, below) is what the retry rule reads (on an idle machine the second death
    # has come before the killer's second look)
    assert kills
    recs = {r["config"]["strategy"]: r for r in records(tmp_path).values()}
    assert recs["ewc"]["status"] == "ok" and outcome.ok == [cells["ewc"]]
    assert recs["naive"]["status"] == "failed" and "KilledWorker" in recs["naive"]["error"]
    assert "2 different workers" in recs["naive"]["error"]
    assert recs["naive"]["versions"] and recs["naive"]["run_id"]
    assert leftovers(tmp_path) == []
    assert_none_left(before)


def kill_while_running(scheduler: str, config_hash: str, kills: list[int], stop: threading.Event) -> None:
    """SIGKILL, twice, the worker process running the cell of `config_hash`, half a second into it."""
    seen: dict[str, float] = {}  # worker -> when the cell was first seen on it
    with distributed.Client(scheduler, set_as_default=False) as client:
        while not stop.is_set() and len(kills) < 2:
            pids = client.run(os.getpid, on_error="ignore")
            now = time.monotonic()
            seen = {a: seen.get(a, now) for a, keys in client.processing().items()
                    if any(config_hash in str(k) for k in keys)}
            for address, since in seen.items():
                if now - since > 0.5 and address in pids and pids[address] not in kills:
                    os.kill(pids[address], signal.SIGKILL)
                    kills.append(pids[address])
            time.sleep(0.1)


def test_ctrl_c_cancels_the_running_cell_and_keeps_finished_records(mnist_root, bench_env, tmp_path):
    """Ctrl-C in a terminal (SIGINT to the whole process group: client, nannies, workers) while EWC
    trains on the embedded cluster: as with the local pool, the run stops at once with exit 130 (not
    after EWC's 1000 epochs), naive's record stays, EWC has none and is listed as not run, and no
    Dask process outlives the run."""

    results = tmp_path / "ctrl-c"
    # EWC trains long enough that the interrupt surely finds it running.
    args = run_args(mnist_root, results, "--executor", "dask", "--jobs", "2", "--set", "strategies.ewc.epochs=1000")
    log = tmp_path / "interrupted-run.log"
    proc, first, stopped_after, stragglers = _interrupt_after_first_record(args, bench_env, results, log, 120)
    output = log.read_text()
    assert proc.returncode == cli.EXIT_INTERRUPTED, output[-3000:]
    assert stopped_after < 30, f"took {stopped_after:.1f} s to stop"
    assert not stragglers, [p.cmdline() for p in stragglers]
    assert "finished: 1 ok, 0 failed, 0 already done, 0 skipped, 1 not run" in output, output[-3000:]
    assert "not run (interrupted): mnist class-il ewc seed 0" in output
    assert "Traceback" not in output, output[-3000:]
    recs = records(results)
    assert list(recs) == [first.name] and first.name.startswith(NAIVE)
    assert recs[first.name]["status"] == "ok"
    assert leftovers(results) == []
    assert not list((results / "runs").glob("*.claim"))
