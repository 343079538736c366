"""Start Dask workers as Slurm jobs (dask-jobqueue) and print the scheduler address for `--scheduler`.

    pip install -e '.[slurm]'
    python scripts/dask_slurm.py --workers 8 --queue cpu --walltime 04:00:00 &
    python -m bench run --scenario class-il --executor dask --scheduler tcp://HOST:PORT --data-root /shared/data

The scheduler runs in this process and lives as long as it does (Ctrl-C stops it and cancels
the Slurm jobs). Each Slurm job is one worker process with one thread; cells then set their own
torch thread count (`--threads`). With `--gpus-per-job 1 --cells-per-gpu K` each job asks Slurm
for one GPU and runs K worker processes that each offer `GPU=1/K`, for `--device cuda
--cells-per-gpu K`. Workers need the project installed and the data root readable; they write
nothing (the client writes the records). Not run here: these machines have no Slurm.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="Slurm jobs to start")
    parser.add_argument("--queue", default=None, help="Slurm partition")
    parser.add_argument("--account", default=None)
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument("--memory", default="8GB", help="memory per job")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores per job (a cell uses --threads of them)")
    parser.add_argument("--gpus-per-job", type=int, default=0)
    parser.add_argument("--cells-per-gpu", type=int, default=1)
    parser.add_argument("--port", type=int, default=8786)
    parser.add_argument("--allowed-failures", type=int, default=1,
                        help="workers a cell may lose (killed, out of memory) before it is recorded failed")
    args = parser.parse_args()

    import dask
    from dask_jobqueue import SLURMCluster

    processes = args.cells_per_gpu if args.gpus_per_job else 1
    extra = ["--nthreads", "1"]
    if args.gpus_per_job:
        extra += ["--resources", f"GPU={1 / args.cells_per_gpu}"]
    dask.config.set({"distributed.scheduler.allowed-failures": args.allowed_failures})
    cluster = SLURMCluster(
        queue=args.queue, account=args.account, walltime=args.walltime, memory=args.memory,
        cores=args.cores, processes=processes, worker_extra_args=extra,
        job_extra_directives=[f"--gres=gpu:{args.gpus_per_job}"] if args.gpus_per_job else [],
        scheduler_options={"port": args.port, "dashboard_address": None},
    )
    cluster.scale(jobs=args.workers)
    print(f"scheduler: {cluster.scheduler_address}", flush=True)
    print(cluster.job_script(), flush=True)
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        cluster.close()


if __name__ == "__main__":
    main()
