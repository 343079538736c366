"""Runs a grid of cells in worker processes, one process per cell, and keeps every finished result.

- A record is written whole (temporary file, then rename) when its cell ends.
- A cell whose record exists with status "ok" for the same configuration hash is
  skipped (resume); `force` reruns it.
- A cell that raises (an exception, a NaN loss) or whose process dies (killed,
  out of memory) is recorded as failed; the other cells go on.
- Ctrl-C or SIGTERM stops the workers; finished records stay, running cells are
  lost and run again next time. A worker whose main process is killed (kill -9)
  stops too, instead of running on unattended as an orphan.
- Every cell runs with the same number of torch threads (`threads`, default 1),
  whatever `jobs` is: float reductions depend on the thread count, so tying it
  to `jobs` would make serial and parallel runs give different numbers.
Workers come from a fork server that has already imported torch and Avalanche,
so a cell starts in milliseconds rather than seconds.
"""
from __future__ import annotations

import copy
import functools
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 10  # how long a worker gets to stop after SIGTERM before it is killed


@dataclass
class Cell:
    config: dict[str, Any]
    path: Path
    run_id: str = ""  # set when started; the record must carry it to count as this run's
    log: tuple[str, ...] = ()  # Avalanche loggers (bench run --log); not part of the record's identity

    @property
    def label(self) -> str:
        c = self.config
        return f"{c['dataset']} {c['scenario']} {c['strategy']} seed {c['seed']}"


def record_path(results: Path, config: dict[str, Any]) -> Path:
    c = config
    return results / "runs" / f"{c['dataset']}_{c['scenario']}_{c['strategy']}_seed{c['seed']}_{c['hash']}.json"


def tmp_path(path: Path, tag: str) -> Path:
    """The temporary file a record is written to before it is renamed to `path`."""
    return path.parent / f".{path.name}.{tag}.tmp"


def write_json_atomic(path: Path, data: dict[str, Any], tag: str | None = None) -> None:
    """Write `data` to `tmp_path(path, tag)`, sync it, then rename it over `path`.

    A reader sees either the old file or the whole new one, never a part. The
    file gets the usual permissions (0666 less the umask), like any other output.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path, tag or uuid.uuid4().hex)
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def finished_ok(path: Path, config_hash: str | None = None) -> bool:
    """True when a valid record with status ok (for `config_hash`, when given) is stored at `path`."""
    record = _read(path)
    if not isinstance(record, dict) or record.get("status") != "ok":
        return False
    config = record.get("config")
    if not isinstance(config, dict) or (config_hash is not None and config.get("hash") != config_hash):
        return False
    matrix = record.get("acc_matrix")
    return isinstance(matrix, list) and bool(matrix) and all(isinstance(row, list) for row in matrix) \
        and isinstance(record.get("metrics"), dict)


@functools.lru_cache(maxsize=None)
def _provenance() -> dict[str, Any]:
    from importlib import metadata

    def version(module: str, dist: str) -> str | None:
        loaded = sys.modules.get(module)  # the imported module knows its build (e.g. 2.14.1+cpu)
        if getattr(loaded, "__version__", None):
            return str(loaded.__version__)
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=PROJECT_DIR, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "versions": {"python": platform.python_version(),
                     **{m: version(m, d) for m, d in (("torch", "torch"), ("torchvision", "torchvision"),
                                                     ("avalanche", "avalanche-lib"), ("numpy", "numpy"))}},
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "host": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                 "cpus": os.cpu_count()},
    }


def provenance() -> dict[str, Any]:
    """Package versions, git commit and dirtiness, host: what a record needs to be trusted or redone."""
    return copy.deepcopy(_provenance())


def failed_record(cell: Cell, error: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"status": "failed", "error": error, "config": cell.config, "acc_matrix": None,
            "metrics": None, **(extra or {})}


def _exit_on_signal(signum, frame):
    # SystemExit, not Exception: the cell's error handling does not catch it, but
    # `finally` blocks and the temporary-file cleanup of write_json_atomic run.
    raise SystemExit(128 + signum)


def _stop_with_parent() -> None:
    """SIGTERM this worker when the main process dies (kill -9), rather than run on as an orphan.

    The fork server does not end while a worker lives (the worker holds its
    keep-alive pipe), so this watches the main process itself: multiprocessing
    gives every child a sentinel that becomes readable when its parent exits.
    """
    parent = mp.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch():
        wait([sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def _worker(cell: Cell, data_root: str, threads: int, bar: int | None, device: str, command: str) -> None:
    """Body of a worker process: run the cell and write its record, ok or failed.

    `bar` is the terminal line of the cell's progress bar (None: no bar)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    signal.signal(signal.SIGTERM, _exit_on_signal)
    _stop_with_parent()
    from bench.cell import run_cell
    from bench.loggers import log_folder

    start = time.time()
    try:
        record = run_cell(cell.config, data_root, threads=threads, progress=bar is not None,
                          bar_position=bar or 0, device=device, log=cell.log,
                          log_dir=log_folder(cell.path) if cell.log else None)
    except Exception as exc:  # noqa: BLE001 - any failure of a cell is recorded, not raised
        record = failed_record(cell, f"{type(exc).__name__}: {exc}",
                               {"traceback": traceback.format_exc(), "time_s": round(time.time() - start, 2),
                                "device": device, "threads": threads, **provenance()})
    record["run_id"] = cell.run_id
    record["command"] = command
    record["data_root"] = data_root
    write_json_atomic(cell.path, record, tag=cell.run_id)


def _context() -> mp.context.BaseContext:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["bench.cell"])
    return ctx


class Interrupted(Exception):
    pass


def _raise_interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


@dataclass
class Outcome:
    ok: list[Cell]
    failed: list[Cell]
    not_run: list[Cell]
    interrupted: bool = False


def run_cells(cells: list[Cell], data_root: str, jobs: int = 1, device: str = "cpu",
              command: str = "", progress: bool = True, on_done=None, threads: int = 1) -> Outcome:
    """Run the cells, at most `jobs` at a time, each with `threads` torch threads.

    `on_done(cell, record)` is called as each ends. Ctrl-C or SIGTERM stops the
    workers and returns with `interrupted` set; cells that had not finished are
    listed in `not_run`.
    """
    ctx = _context()
    pending = list(cells)
    running: dict[Any, tuple[Cell, Any]] = {}
    bars: dict[Any, int] = {}  # worker -> the terminal line its progress bar uses
    outcome = Outcome([], [], [])
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                cell = pending[0]
                cell.run_id = uuid.uuid4().hex
                line = min(set(range(jobs)) - set(bars.values()))
                proc = ctx.Process(target=_worker, name=cell.label,
                                   args=(cell, data_root, threads, line if progress else None, device, command))
                proc.start()
                running[proc.sentinel] = (cell, proc)
                bars[proc.sentinel] = line
                pending.pop(0)
            for sentinel in wait(list(running)):
                cell, proc = running[sentinel]
                proc.join()
                _finish(cell, proc, outcome, on_done)
                del running[sentinel], bars[sentinel]
    except (KeyboardInterrupt, Interrupted):
        outcome.interrupted = True
        # A second Ctrl-C or SIGTERM must not cut the cleanup short.
        stop_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _stop(running.values())
            unfinished = []
            for cell, proc in running.values():
                if _counted(cell, outcome):
                    continue
                record = _read(cell.path)
                if isinstance(record, dict) and record.get("run_id") == cell.run_id:
                    _count(cell, record, outcome, on_done)  # it finished while being stopped
                else:
                    unfinished.append(cell)
                tmp_path(cell.path, cell.run_id).unlink(missing_ok=True)
            outcome.not_run = unfinished + pending
        finally:
            signal.signal(signal.SIGINT, stop_int)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return outcome


def _stop(procs) -> None:
    procs = list(procs)
    for _, proc in procs:
        if proc.exitcode is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for _, proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.exitcode is None:
            proc.kill()
            proc.join()


def _finish(cell: Cell, proc, outcome: Outcome, on_done) -> None:
    """Account for a worker that has exited; write a failed record for it when it left none."""
    record = _read(cell.path)
    ours = isinstance(record, dict) and record.get("run_id") == cell.run_id
    # A worker that exited cleanly wrote its record; if another run wrote the same cell
    # since (same path, so the same configuration), that record stands.
    theirs = proc.exitcode == 0 and isinstance(record, dict) and record.get("status") in ("ok", "failed") \
        and isinstance(record.get("config"), dict) and record["config"].get("hash") == cell.config.get("hash")
    if not (ours or theirs):
        code = proc.exitcode
        reason = (f"worker process killed by signal {-code}" if code is not None and code < 0
                  else f"worker process exited with code {code} without writing its record")
        if code == -signal.SIGKILL:
            reason += " (out of memory, or killed)"
        record = failed_record(cell, reason, {"run_id": cell.run_id, **provenance()})
        write_json_atomic(cell.path, record, tag=cell.run_id)
    tmp_path(cell.path, cell.run_id).unlink(missing_ok=True)  # left by a worker killed mid-write
    _count(cell, record, outcome, on_done)


def _counted(cell: Cell, outcome: Outcome) -> bool:
    return any(c is cell for c in (*outcome.ok, *outcome.failed))


def _count(cell: Cell, record: dict[str, Any], outcome: Outcome, on_done) -> None:
    (outcome.ok if record.get("status") == "ok" else outcome.failed).append(cell)
    if on_done:
        on_done(cell, record)


def _read(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check_writable(results: Path) -> None:
    """Raises OSError when records cannot be written under `results`."""
    runs = results / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=runs, prefix=".write-check-", suffix=".tmp"):
        pass


def print_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
