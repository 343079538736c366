"""Runs a grid of cells in worker processes, one process per cell, and keeps every finished result.

- A record is written whole (temporary file, then rename) when its cell ends.
- A cell whose record exists with status "ok" for the same configuration hash is
  skipped (resume); `force` reruns it.
- A cell that raises (an exception, a NaN loss) or whose process dies (killed,
  out of memory) is recorded as failed; the other cells go on.
- Ctrl-C or SIGTERM stops the workers; finished records stay, running cells are
  lost and run again next time.
Workers come from a fork server that has already imported torch and Avalanche,
so a cell starts in milliseconds rather than seconds.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any


@dataclass
class Cell:
    config: dict[str, Any]
    path: Path
    run_id: str = ""  # set when started; the record must carry it to count as this run's

    @property
    def label(self) -> str:
        c = self.config
        return f"{c['dataset']} {c['scenario']} {c['strategy']} seed {c['seed']}"


def record_path(results: Path, config: dict[str, Any]) -> Path:
    c = config
    return results / "runs" / f"{c['dataset']}_{c['scenario']}_{c['strategy']}_seed{c['seed']}_{c['hash']}.json"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finished_ok(path: Path) -> bool:
    """True when a valid record with status ok is stored at `path`."""
    try:
        with open(path) as f:
            return json.load(f).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        return False


def failed_record(cell: Cell, error: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"status": "failed", "error": error, "config": cell.config, "acc_matrix": None,
            "metrics": None, **(extra or {})}


def _worker(cell: Cell, data_root: str, threads: int, progress: bool, device: str, command: str) -> None:
    """Body of a worker process: run the cell and write its record, ok or failed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from bench.cell import run_cell

    start = time.time()
    try:
        record = run_cell(cell.config, data_root, threads=threads, progress=progress, device=device)
    except Exception as exc:  # noqa: BLE001 - any failure of a cell is recorded, not raised
        record = failed_record(cell, f"{type(exc).__name__}: {exc}",
                               {"traceback": traceback.format_exc(), "time_s": round(time.time() - start, 2)})
    record["run_id"] = cell.run_id
    record["command"] = command
    record["data_root"] = data_root
    write_json_atomic(cell.path, record)


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
              command: str = "", progress: bool = True, on_done=None) -> Outcome:
    """Run the cells, at most `jobs` at a time; `on_done(cell, record)` is called as each ends."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // jobs)
    ctx = _context()
    pending = list(cells)
    running: dict[Any, tuple[Cell, Any]] = {}
    outcome = Outcome([], [], [])
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                cell = pending.pop(0)
                cell.run_id = uuid.uuid4().hex
                proc = ctx.Process(target=_worker, name=cell.label,
                                   args=(cell, data_root, threads, progress and jobs == 1, device, command))
                proc.start()
                running[proc.sentinel] = (cell, proc)
            for sentinel in wait(list(running)):
                cell, proc = running.pop(sentinel)
                proc.join()
                record = _read(cell.path)
                if record is None or record.get("run_id") != cell.run_id:
                    reason = (f"worker process killed by signal {-proc.exitcode}" if proc.exitcode < 0
                              else f"worker process exited with code {proc.exitcode}")
                    if proc.exitcode == -signal.SIGKILL:
                        reason += " (out of memory, or killed)"
                    record = failed_record(cell, reason)
                    write_json_atomic(cell.path, record)
                (outcome.ok if record.get("status") == "ok" else outcome.failed).append(cell)
                if on_done:
                    on_done(cell, record)
    except (KeyboardInterrupt, Interrupted):
        outcome.interrupted = True
        for cell, proc in running.values():
            proc.terminate()
        for cell, proc in running.values():
            proc.join()
        outcome.not_run = [cell for cell, _ in running.values()] + pending
    finally:
        signal.signal(signal.SIGTERM, previous)
    return outcome


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check_writable(results: Path) -> None:
    """Raises OSError when records cannot be written under `results`."""
    runs = results / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=runs, prefix=".write-check-"):
        pass


def print_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
