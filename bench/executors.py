"""Where the cells of `run` and `tune` are trained: the executor arguments, their checks and the call.

Both commands train through `execute`, so a cell is claimed and its record stored the same
way whichever command planned it; the exit codes say how a command's cells ended.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable

from bench.plan import UsageError, check_device

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (--jobs, --seeds, --memory...)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """--executor, --scheduler, --cells-per-gpu: where the cells of `run` and `tune` are trained."""
    parser.add_argument("--executor", choices=("local", "dask"), default="local",
                        help="local: a process pool on this machine (default); dask: Dask workers, an embedded "
                             "cluster of --jobs workers on 127.0.0.1 unless --scheduler is given")
    parser.add_argument("--scheduler", default=None,
                        help="address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786 "
                             "(default: $BENCH_DASK_SCHEDULER; with --executor dask)")
    parser.add_argument("--cells-per-gpu", type=count(1), default=1,
                        help="with --executor dask and --device cuda, each cell asks for 1/K of a GPU resource")


def check_executor(args) -> str | None:
    """The Dask scheduler address to use (None: an embedded cluster, or the local pool); exit 2 on a bad mix."""
    if args.executor == "local":
        if args.scheduler:
            raise UsageError("--scheduler needs --executor dask")
        return None
    return args.scheduler or os.environ.get("BENCH_DASK_SCHEDULER") or None


def execute(todo: list, args, command: str, on_done=None, on_skip=None):
    """Train the cells with the chosen executor; both claim cells and store records the same way."""
    from bench.runner import run_cells

    device = check_device(args.device)
    if args.executor == "local":
        return run_cells(todo, args.data_root, jobs=args.jobs, device=device, command=command, on_done=on_done,
                         threads=args.threads, force=args.force, on_skip=on_skip)
    from bench import dask_executor

    try:
        return dask_executor.run_cells(todo, args.data_root, jobs=args.jobs, device=device, command=command,
                                       on_done=on_done, threads=args.threads, force=args.force, on_skip=on_skip,
                                       scheduler=check_executor(args), cells_per_gpu=args.cells_per_gpu)
    except dask_executor.SchedulerUnreachable as exc:
        raise UsageError(str(exc)) from None
