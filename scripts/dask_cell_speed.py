"""How fast one cell trains in a plain process and on a Dask worker: prints wall time, the training
thread's CPU time and its minor page faults (a tensor that glibc maps afresh faults in every page).

    python scripts/dask_cell_speed.py local --data-root ../shared/data
    WORKERS=1 scripts/dask_by_hand.sh python scripts/dask_cell_speed.py dask --data-root ../shared/data

`dask` sends the cell to the scheduler at $BENCH_DASK_SCHEDULER. The cell: Split-MNIST Class-IL
`replay`, 1 epoch, 1 torch thread (change with --strategy, --epochs).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def train(config: dict, data_root: str) -> dict:
    """Runs where the cell trains."""
    import resource

    from bench.runner import compute_record

    wall, cpu = time.perf_counter(), time.thread_time()
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    record = compute_record(config, data_root, 1, "cpu")
    return {"status": record["status"], "time_s": record["time_s"], "wall_s": round(time.perf_counter() - wall, 2),
            "thread_cpu_s": round(time.thread_time() - cpu, 2),
            "minor_faults": resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults,
            "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("where", choices=("local", "dask"))
    parser.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT", "data"))
    parser.add_argument("--strategy", default="replay")
    parser.add_argument("--epochs", default="1")
    args = parser.parse_args()
    from bench import cli

    run = cli.build_parser().parse_args(["run", "--scenario", "class-il", "--strategies", args.strategy,
                                         "--epochs", args.epochs, "--data-root", args.data_root])
    [config] = [cell.config for cell, _ in cli.plan(run)[0]]
    if args.where == "local":
        import bench.cell  # noqa: F401  imported before the clock starts, as in the local pool's fork server

        print(train(config, args.data_root))
        return
    from bench import dask_executor

    client = dask_executor.connect(os.environ["BENCH_DASK_SCHEDULER"], 1)
    try:
        print(client.submit(train, config, args.data_root, pure=False).result())
    finally:
        dask_executor.close(client)


if __name__ == "__main__":
    main()
