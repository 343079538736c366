"""Runs a grid of cells in worker processes, one process per cell, and keeps every finished result.

- The main process claims a cell (bench/claims.py) before starting it and stores
  its record (bench/records.py: written whole, never a failed attempt over an ok
  record) before releasing the claim. A cell claimed by another run is skipped
  and counted as running elsewhere. Workers only compute: each leaves its record
  in a temporary result file, which the main process reads when the worker ends.
- A cell whose ok record matches its identity (configuration hash, code
  fingerprint, device, threads) is skipped (resume); `force` reruns it.
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

import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from bench import claims
from bench.loggers import log_folder
from bench.records import (identity, is_done, is_ok, previous_path, read_json, record_path,  # noqa: F401
                           store_record, tmp_path, validate_record, write_json_atomic)

STOP_TIMEOUT_S = 10  # how long a worker gets to stop after SIGTERM before it is killed


@dataclass
class Cell:
    config: dict[str, Any]
    path: Path
    code: str = ""  # fingerprint of the code it runs (bench.provenance), part of its identity
    run_id: str = ""  # set when started; the record must carry it to count as this run's
    claim: claims.Claim | None = None
    log: tuple[str, ...] = ()  # Avalanche loggers (bench run --log); not part of the record's identity

    @property
    def label(self) -> str:
        c = self.config
        return f"{c['dataset']} {c['scenario']} {c['strategy']} seed {c['seed']}"


def finished_ok(path: Path, wanted: dict[str, Any] | None = None) -> bool:
    """True when a usable ok record (made for identity `wanted`, when given) is stored at `path`."""
    record = read_json(path)
    return is_ok(record) if wanted is None else is_done(record, wanted)


def failed_record(config: dict[str, Any], error: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"status": "failed", "error": error, "config": config, "acc_matrix": None,
            "metrics": None, **(extra or {})}


def strategy_module(config: dict[str, Any]) -> str | None:
    """The module of the cell's strategy (None for a name the registry does not know)."""
    from bench import registry

    try:
        return registry.get(config["strategy"]).module.__name__
    except KeyError:
        return None


def cell_provenance(config: dict[str, Any]) -> dict[str, Any]:
    """Provenance (bench.provenance) of the code that a cell of `config` runs."""
    from bench.provenance import provenance

    return provenance(strategy_module(config))


def compute_record(config: dict[str, Any], data_root: str, threads: int, device: str, progress: bool = False,
                   bar_position: int = 0, log: tuple[str, ...] = (), log_dir: Path | None = None) -> dict[str, Any]:
    """Train the cell and return its record, ok or failed: what every executor's worker does.

    A cell's own exception is its result (a failed record with the traceback), not an error."""
    from bench.cell import run_cell
    from bench.provenance import code_fingerprint

    start = time.time()
    try:
        # the code on disk as the cell starts (its strategy is imported now): store_result checks
        # it against the fingerprint the run was planned with, which the record names
        code_ran = code_fingerprint(strategy_module(config))
        record = run_cell(config, data_root, threads=threads, progress=progress, bar_position=bar_position,
                          device=device, log=log, log_dir=log_dir)
        return {**record, "code_ran": code_ran}
    except Exception as exc:  # noqa: BLE001 - any failure of a cell is recorded, not raised
        return failed_record(config, f"{type(exc).__name__}: {exc}",
                             {"traceback": traceback.format_exc(), "time_s": round(time.time() - start, 2),
                              "device": device, "threads": threads, **cell_provenance(config)})


# ---------------------------------------------------------------- the client's side of a cell
# claim -> dispatch -> store -> release, whatever executes the cell in between.

CLAIMED, HELD, DONE = "claimed", "held", "done"
WORKER_TAG = "worker"


def claim_cell(cell: Cell, wanted: dict[str, Any], force: bool = False) -> tuple[str, str]:
    """Claim `cell` for this run; returns (CLAIMED | HELD | DONE, detail).

    HELD: another run has it (detail names that run). DONE: another run finished
    it since the plan was made, so there is nothing left to do.
    """
    cell.run_id = cell.run_id or uuid.uuid4().hex
    try:
        cell.claim = claims.claim(cell.path, cell.run_id, force=force)
    except claims.Held as held:
        return HELD, str(held)
    old_run = (cell.claim.taken_over or {}).get("run_id")
    if isinstance(old_run, str) and old_run.isalnum():  # a dead run may have left its worker's result behind
        tmp_path(cell.path, f"{old_run}.result").unlink(missing_ok=True)
    if not force and finished_ok(cell.path, wanted):
        release_cell(cell)
        return DONE, ""
    return CLAIMED, ""


def store_result(cell: Cell, record: dict[str, Any], wanted: dict[str, Any],
                 stamp: dict[str, Any], force: bool = False) -> dict[str, Any]:
    """Stamp and store a cell's record (see records.store_record) and return it.

    When an ok record already there is kept instead, the returned record says so
    in `not_stored`; when `force` replaced an ok record, `replaced` names where the
    old one is kept (both in memory only)."""
    ran = record.pop("code_ran", cell.code)
    if ran != cell.code and record.get("status") == "ok":
        # The record would name the code the run was planned with, but the cell ran other code
        # (edited or checked out since): not a result of either; a later run trains it again.
        record = failed_record(cell.config, f"the code changed after the run was planned (the cell ran code "
                                            f"{ran}, the run planned {cell.code}): run it again",
                               {k: record[k] for k in ("time_s", "device", "threads") if k in record})
    record.update(run_id=cell.run_id, code=cell.code, **stamp)
    before = read_json(cell.path) if force else None
    try:
        stored = store_record(cell.path, record, wanted, tag=cell.run_id, force=force)
    except OSError as exc:  # a full or failing results disk: every later record would fail alike
        raise StoreFailed(cell, f"cannot write the record of {cell.label} to {cell.path}: "
                                f"{exc.strerror or exc}") from exc
    if not stored:
        record = {**record, "not_stored": f"the ok record already at {cell.path} is kept"}
    elif is_ok(before) and before.get("run_id") != record.get("run_id"):
        record = {**record, "replaced": f"the earlier ok record is kept as {previous_path(cell.path)}"}
    return record


class StoreFailed(Exception):
    """A cell's record could not be written (a full results disk, say); the run stops there."""

    def __init__(self, cell: Cell, message: str):
        super().__init__(message)
        self.cell = cell


def release_cell(cell: Cell) -> None:
    if cell.claim is not None:
        cell.claim.release()
        cell.claim = None


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


def result_path(cell: Cell) -> Path:
    """Where a worker leaves the record it computed, for the main process to store."""
    return tmp_path(cell.path, f"{cell.run_id}.result")


def _worker(config: dict[str, Any], result: Path, data_root: str, threads: int, bar: int | None,
            device: str, log: tuple[str, ...] = (), log_dir: Path | None = None) -> None:
    """Body of a worker process: run the cell and leave its record, ok or failed, at `result`.

    `bar` is the terminal line of the cell's progress bar (None: no bar); `log` names the
    Avalanche loggers that write under `log_dir`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    signal.signal(signal.SIGTERM, _exit_on_signal)
    _stop_with_parent()
    record = compute_record(config, data_root, threads, device, progress=bar is not None, bar_position=bar or 0,
                            log=log, log_dir=log_dir)
    write_json_atomic(result, record, tag=WORKER_TAG)


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
    store_failed: str = ""  # why a record could not be written, which stopped the run
    elsewhere: list[Cell] = field(default_factory=list)  # claimed by another run: skipped
    done_elsewhere: list[Cell] = field(default_factory=list)  # finished by another run since the plan


def run_cells(cells: list[Cell], data_root: str, jobs: int = 1, device: str = "cpu",
              command: str = "", progress: bool = True, on_done=None, threads: int = 1,
              force: bool = False, on_skip: Callable[[Cell, str], None] | None = None) -> Outcome:
    """Run the cells, at most `jobs` at a time, each with `threads` torch threads.

    Each cell is claimed first; one that another run holds (or has finished since)
    is skipped and `on_skip(cell, why)` is called. `on_done(cell, record)` is
    called as each cell ends, with the record that stands at its path. Ctrl-C or
    SIGTERM stops the workers and returns with `interrupted` set; cells that had
    not finished are listed in `not_run`.
    """
    ctx = _context()
    pending = list(cells)
    running: dict[Any, tuple[Cell, Any]] = {}
    bars: dict[Any, int] = {}  # worker -> the terminal line its progress bar uses
    outcome = Outcome([], [], [])
    stamp = {"command": command, "data_root": data_root}
    wanted = {id(c): identity(c.config, c.code, device, threads) for c in cells}
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                cell = pending.pop(0)
                state, why = claim_cell(cell, wanted[id(cell)], force)
                if state != CLAIMED:
                    (outcome.elsewhere if state == HELD else outcome.done_elsewhere).append(cell)
                    if on_skip:
                        on_skip(cell, f"running elsewhere ({why})" if state == HELD else "done by another run")
                    continue
                line = min(set(range(jobs)) - set(bars.values()))
                proc = ctx.Process(target=_worker, name=cell.label,
                                   args=(cell.config, result_path(cell), data_root, threads,
                                         line if progress else None, device, cell.log,
                                         log_folder(cell.path) if cell.log else None))
                proc.start()
                running[proc.sentinel] = (cell, proc)
                bars[proc.sentinel] = line
            for sentinel in wait(list(running)) if running else []:
                cell, proc = running.pop(sentinel)
                del bars[sentinel]
                proc.join()
                _finish(cell, proc, outcome, on_done, wanted[id(cell)], stamp, force)
    except StoreFailed as exc:
        outcome.store_failed = str(exc)
        _stop(running.values())
        outcome.not_run = [exc.cell] + [c for c, _ in running.values()] + pending
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
                record = read_json(result_path(cell))
                if isinstance(record, dict):
                    _finish(cell, proc, outcome, on_done, wanted[id(cell)], stamp, force)  # it finished while being stopped
                else:
                    unfinished.append(cell)
            outcome.not_run = unfinished + [c for c in pending if not _counted(c, outcome)]
        finally:
            signal.signal(signal.SIGINT, stop_int)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for cell, _ in running.values():
            result_path(cell).unlink(missing_ok=True)
            tmp_path(result_path(cell), WORKER_TAG).unlink(missing_ok=True)
        for cell in cells:
            release_cell(cell)
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


def _finish(cell: Cell, proc, outcome: Outcome, on_done, wanted: dict[str, Any], stamp: dict[str, Any],
            force: bool = False) -> None:
    """Store the record of a worker that has exited (a failed one when it left none), then release the cell."""
    result = result_path(cell)
    record = read_json(result)
    if not isinstance(record, dict) or validate_record(record) is not None:
        code = proc.exitcode
        reason = (f"worker process killed by signal {-code}" if code is not None and code < 0
                  else f"worker process exited with code {code} without leaving its record")
        if code == -signal.SIGKILL:
            reason += " (out of memory, or killed)"
        record = failed_record(cell.config, reason, cell_provenance(cell.config))
    try:
        standing = store_result(cell, record, wanted, stamp, force)
    finally:
        result.unlink(missing_ok=True)
        tmp_path(result, WORKER_TAG).unlink(missing_ok=True)  # left by a worker killed mid-write
        release_cell(cell)
    _count(cell, standing, outcome, on_done)


def _counted(cell: Cell, outcome: Outcome) -> bool:
    return any(c is cell for c in (*outcome.ok, *outcome.failed))


def _count(cell: Cell, record: dict[str, Any], outcome: Outcome, on_done) -> None:
    (outcome.ok if record.get("status") == "ok" else outcome.failed).append(cell)
    if on_done:
        on_done(cell, record)


def check_writable(results: Path) -> None:
    """Raises OSError when records or tables cannot be written under `results`."""
    for folder in (results / "runs", results / "tables"):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-", suffix=".tmp"):
            pass


def print_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
