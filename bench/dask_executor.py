"""Runs cells on a Dask cluster: an embedded `LocalCluster` on 127.0.0.1, or a running scheduler.

Imported only for `--executor dask`, so that the local pool needs neither dask
nor distributed.

- A worker only trains: it runs `bench.cell.run_cell` and returns the record
  (ok, or failed with the exception) to this process. This process claims each
  cell before sending it and stores what comes back, exactly as the local pool
  does (`bench.runner.claim_cell`, `store_result`, `release_cell`), so claims,
  resume and "a failed attempt never replaces an ok record" hold unchanged.
  Workers need the data root, not the results folder.
- Every worker process has one thread and runs one cell at a time; the cell sets
  its own torch thread count (`threads`), as in the local pool.
- A worker that dies mid-cell (killed, out of memory) is Dask's business: the
  scheduler runs the cell again on another worker until it has lost
  `allowed-failures` + 1 workers on it, then reports `KilledWorker`, which is
  recorded as a failed cell. The embedded cluster allows `ALLOWED_FAILURES`; a
  scheduler started by hand uses its own setting
  (`DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES`).
- A `--scheduler` address is asked, before any Client exists, whether it is a Dask
  scheduler (`check_scheduler`, at most `CONNECT_TIMEOUT_S`): a closed port, a bad address or
  a port that is no scheduler's (its dashboard's) exits 2 with a message, never hangs.
- When the scheduler goes away mid-run, Dask cancels every cell it held: those cells
  are "not run" (nothing stored; the next run trains them), not failed.
- The embedded cluster starts at most one worker per cell (`--jobs` is an upper bound).
- Ctrl-C or SIGTERM cancels the pending and running cells and ignores their
  results; records already written stay. Dask cannot interrupt a running task:
  the embedded cluster's workers (which ignore the terminal's Ctrl-C, like the
  local pool's) are stopped by closing the cluster; a hand-started worker
  finishes its cell in the background and Dask drops the result.
- Every worker, whoever started it, trains as fast as a local-pool process: a
  plugin (`CellWorker`) turns the worker's statistical profiler off and, where
  the worker's environment turned glibc's adaptive malloc thresholds off (Dask's
  nanny sets MALLOC_TRIM_THRESHOLD_ for the workers it spawns), sets generous
  fixed ones.
- `--device cuda` makes each cell ask for 1/K of a `GPU` resource
  (`--cells-per-gpu K`): start K worker processes per GPU, each offering
  `GPU=1/K`, so that K cells share a GPU as separate processes.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import platform
import signal
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any, Callable

import dask
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker
from tqdm import tqdm

from bench.records import identity
from bench.runner import CLAIMED, HELD, Cell, Interrupted, Outcome, _count, _counted, _raise_interrupt, \
    StoreFailed, cell_provenance, claim_cell, compute_record, failed_record, print_line, release_cell, \
    store_result

ALLOWED_FAILURES = 1  # the embedded cluster runs a cell on at most 2 workers that die under it
CONNECT_TIMEOUT_S = 10
GPU_RESOURCE = "GPU"
HOST = "127.0.0.1"
PLUGIN = "clbench-cell-worker"
# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 2**20
# Setting any of these at process start turns glibc's adaptive mmap threshold off for good.
MALLOC_ENVIRON = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


class SchedulerUnreachable(Exception):
    """The scheduler address given cannot be reached; nothing has been sent."""


def train_on_worker(config: dict[str, Any], data_root: str, threads: int, device: str,
                    log: tuple[str, ...] = (), log_dir: Path | None = None) -> dict[str, Any]:
    """Runs on a Dask worker: the cell's record, ok or failed. Never raises for a cell's own failure,
    which is a result, not a task error for Dask to retry."""
    record = compute_record(config, data_root, threads, device, log=log, log_dir=log_dir)
    record["dask_worker"] = get_worker().address
    return record


def _warm_up() -> None:
    """Import torch and Avalanche in a worker before the clock of the first cell starts."""
    import bench.cell  # noqa: F401


def restore_malloc_thresholds() -> bool:
    """Undo, as far as glibc allows, the cost of a MALLOC_* variable in this process's environment.

    Any of `MALLOC_ENVIRON` set at start (Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536)
    freezes the mmap threshold at 128 KiB, so every tensor above it is mapped and unmapped
    afresh on each allocation: a Split-MNIST cell ran about 1.6 times slower. The adaptive
    threshold cannot be turned back on, so this sets the values it grows to on its own
    (mmap threshold at its 32 MiB maximum, trim threshold at twice that). Returns True when it did.
    """
    if not any(name in os.environ for name in MALLOC_ENVIRON) or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
                and libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX))


class CellWorker(WorkerPlugin):
    """Makes a worker train cells as fast as a local-pool process, whoever started it.

    A plugin, not a step of the warm-up, so that workers that join later (a nanny's
    replacement for a killed worker, more Slurm jobs) get it too. `embedded`: the
    worker belongs to this run's LocalCluster, so Ctrl-C in the terminal reaches it
    too; it ignores SIGINT, as the local pool's workers do, and leaves the stopping
    to the client (which cancels its cells and closes the cluster), instead of
    dying with a KeyboardInterrupt traceback in the middle of the client's cleanup."""

    def __init__(self, embedded: bool = False):
        self.embedded = embedded

    def setup(self, worker) -> None:
        if self.embedded and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        restore_malloc_thresholds()
        # no one looks at the profile; its sampling every 10 ms competes for the GIL with training
        for name in ("profile", "profile-cycle"):
            callback = worker.periodic_callbacks.pop(name, None)
            if callback is not None:
                callback.stop()


def task_options(device: str, cells_per_gpu: int = 1, resource: str | None = None) -> dict[str, Any]:
    """What `Client.submit` gets for each cell: a share of a GPU resource when the cell needs one.

    `resource` names the resource (default `GPU` for a CUDA device, none otherwise);
    tests pass a made-up name on CPU workers."""
    name = resource or (GPU_RESOURCE if device.startswith("cuda") else None)
    return {"resources": {name: 1 / cells_per_gpu}} if name else {}


async def _identity(address: str) -> Any:
    """What the server at `address` says it is, asked the way a Dask client asks a scheduler."""
    from distributed.comm import connect as open_comm

    comm = await open_comm(address, timeout=CONNECT_TIMEOUT_S)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def _tcp_connect(address: str, timeout: float) -> str:
    """Open and close a TCP connection to a tcp:// or tls:// address (others are left to Dask):
    a closed port is told at once, not after Dask's connect retries. Returns the address's scheme."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme in ("tcp", "tls"):
        socket.create_connection(parse_host_port(location), timeout=timeout).close()
    return scheme


def check_scheduler(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise SchedulerUnreachable unless a Dask scheduler answers at `address` within `timeout` seconds.

    Asked before any Client exists: a Client's own timeout does not cover its handshake, so a port
    that accepts TCP but is no scheduler (the dashboard's, say) would hang it forever, and a Client
    that fails half-built prints an "Exception ignored" traceback when it is collected.
    """
    try:
        scheme = _tcp_connect(address, timeout)
    except (OSError, ValueError, TypeError) as exc:  # refused, unresolvable, no port...
        raise SchedulerUnreachable(f"cannot reach the Dask scheduler at {address}: "
                                   f"{type(exc).__name__}: {exc}") from None
    if scheme != "tcp":
        return  # tls:// and others need the cluster's security settings to talk: the Client's business
    try:
        answer = asyncio.run(asyncio.wait_for(_identity(address), timeout))
    except (asyncio.TimeoutError, TimeoutError):
        raise SchedulerUnreachable(
            f"no Dask scheduler answered at {address} within {timeout:.0f} s (a port that accepts connections "
            "but is not the scheduler's, such as its dashboard's? a scheduler listens on tcp://HOST:8786 by "
            "default)") from None
    except Exception as exc:  # noqa: BLE001 - a bad address (ValueError), refused (OSError), closed comm...
        raise SchedulerUnreachable(f"cannot reach the Dask scheduler at {address}: "
                                   f"{type(exc).__name__}: {exc}") from None
    kind = answer.get("type") if isinstance(answer, dict) else None
    if kind != "Scheduler":
        raise SchedulerUnreachable(f"{address} answered, but it is not a Dask scheduler "
                                   f"(it says it is {kind or type(answer).__name__})")


def connect(scheduler: str | None, jobs: int, worker_resources: dict[str, float] | None = None) -> Client:
    """A client of the scheduler at `scheduler`, or of a new embedded cluster of `jobs` one-thread workers."""
    if scheduler:
        check_scheduler(scheduler)
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SchedulerUnreachable(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    else:
        # (the profiler is turned off by CellWorker, on every worker alike)
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                              "distributed.nanny.pre-spawn-environ": _worker_environ()}):
            # memory_limit=0: no per-worker cap, the system decides, as with the local pool
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host=HOST,
                                   dashboard_address=None, memory_limit=0, resources=worker_resources)
        client = Client(cluster, set_as_default=False)
    try:
        client.register_plugin(CellWorker(embedded=not scheduler), name=PLUGIN)
        client.run(_warm_up)
    except BaseException:
        close(client)
        raise
    return client


def _worker_environ() -> dict[str, Any]:
    """Dask's environment for worker processes, without its MALLOC_TRIM_THRESHOLD_.

    Setting that variable at all turns off glibc's adaptive mmap threshold, so every
    tensor above 128 KiB is mmapped and unmapped afresh on each allocation: a
    Split-MNIST EWC cell took twice as long on a Dask worker as in the local pool.
    """
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


def close(client: Client) -> None:
    """Disconnect; shut the embedded cluster down (a scheduler started by hand keeps running)."""
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def run_cells(cells: list[Cell], data_root: str, jobs: int = 1, device: str = "cpu", command: str = "",
              progress: bool = True, on_done: Callable[[Cell, dict], None] | None = None, threads: int = 1,
              force: bool = False, on_skip: Callable[[Cell, str], None] | None = None,
              scheduler: str | None = None, cells_per_gpu: int = 1, resource: str | None = None,
              worker_resources: dict[str, float] | None = None) -> Outcome:
    """Run the cells on Dask; same contract as `bench.runner.run_cells`.

    Raises SchedulerUnreachable before sending anything when `scheduler` cannot be reached.
    """
    from bench.loggers import log_folder

    outcome = Outcome([], [], [])
    if not cells:
        return outcome
    options = task_options(device, cells_per_gpu, resource)
    if not scheduler and worker_resources is None:
        worker_resources = options.get("resources")  # the embedded workers offer what the cells ask for
    start = time.monotonic()
    workers = min(jobs, len(cells))  # an embedded worker more than there are cells would only hold memory
    client = connect(scheduler, workers, worker_resources)
    where = scheduler or f"an embedded LocalCluster of {workers} workers on {HOST}"
    print_line(f"dask: {len(client.scheduler_info()['workers'])} workers at {where}, "
               f"ready in {time.monotonic() - start:.1f} s")
    futures: dict[Any, Cell] = {}
    lost: list[Cell] = []  # cells whose task the scheduler took with it when it went away
    stamp = {"command": command, "data_root": data_root}
    wanted = {id(c): identity(c.config, c.code, device, threads) for c in cells}
    bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=not progress, file=sys.stderr)
    previous_int = signal.getsignal(signal.SIGINT)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for cell in cells:
            cell.run_id = uuid.uuid4().hex
            state, why = claim_cell(cell, wanted[id(cell)], force)
            if state != CLAIMED:
                (outcome.elsewhere if state == HELD else outcome.done_elsewhere).append(cell)
                if on_skip:
                    on_skip(cell, f"running elsewhere ({why})" if state == HELD else "done by another run")
                bar.update(1)
                continue
            log_dir = log_folder(cell.path) if cell.log else None
            future = client.submit(train_on_worker, cell.config, data_root, threads, device, cell.log, log_dir,
                                   key=f"cell-{cell.config['hash']}-{cell.run_id}", pure=False, **options)
            futures[future] = cell
        for future in as_completed(list(futures), loop=client.loop):
            cell = futures.pop(future)
            record = _result(future, cell)
            if record is None:  # lost with the scheduler: nothing to store, the cell is still to do
                release_cell(cell)
                outcome.not_run.append(cell)
                lost.append(cell)
                bar.update(1)
                continue
            try:
                standing = store_result(cell, record, wanted[id(cell)], stamp, force)
            finally:
                release_cell(cell)
            with tqdm.external_write_mode(file=sys.stderr):
                _count(cell, standing, outcome, on_done)
            bar.update(1)
    except StoreFailed as exc:
        outcome.store_failed = str(exc)
        client.cancel(list(futures), force=True)
        outcome.not_run += [exc.cell, *futures.values()]
    except (KeyboardInterrupt, Interrupted):
        outcome.interrupted = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        client.cancel(list(futures), force=True)
        skipped = {id(c) for c in (*outcome.elsewhere, *outcome.done_elsewhere)}
        outcome.not_run = [cell for cell in cells if not _counted(cell, outcome) and id(cell) not in skipped]
    else:
        if lost:
            print_line(f"dask: lost the connection to the scheduler; {len(lost)} cell(s) not run (nothing stored "
                       "for them): run the same command again once the scheduler is back")
    finally:
        bar.close()
        for cell in cells:  # claims of cells that never came back
            release_cell(cell)
        try:
            close(client)
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    return outcome


def _result(future, cell: Cell) -> dict[str, Any] | None:
    """The worker's record, a failed one when Dask gave up on the cell (its workers died), or None
    when the task was cancelled without a result (the scheduler went away): the cell did not fail,
    it was not run."""
    try:
        return future.result()
    except CancelledError:  # distributed's FutureCancelledError, e.g. "scheduler-connection-lost"
        return None
    except Exception as exc:  # noqa: BLE001 - KilledWorker and anything else Dask reports
        reason = f"{type(exc).__name__}: {exc}"
        if type(exc).__name__ == "KilledWorker":
            reason += " (out of memory, or killed)"
        return failed_record(cell.config, reason, cell_provenance(cell.config))
