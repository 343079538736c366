#!/usr/bin/env bash
# Run a command against a Dask scheduler and workers started by hand on 127.0.0.1, as a user
# would start them (`dask scheduler`, `dask worker`, Dask's default settings), then stop them.
# The command finds the scheduler in $BENCH_DASK_SCHEDULER, which `--executor dask` reads.
# From the repository root:
#
#   WORKERS=2 PORT=8786 scripts/dask_by_hand.sh \
#       python -m bench run --scenario class-il --executor dask --data-root ../shared/data --results DIR
#
# Everything binds to 127.0.0.1 only; the scheduler's and workers' logs go to $LOGS (default: a
# temporary folder).
set -euo pipefail

WORKERS=${WORKERS:-2}
PORT=${PORT:-8786}
LOGS=${LOGS:-$(mktemp -d)}
export BENCH_DASK_SCHEDULER="tcp://127.0.0.1:$PORT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the workers import this checkout's bench

pids=()
stop() {
    # each was started in its own session (setsid): stop its whole process group, nannies' workers included
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
}
trap stop EXIT

setsid python -m dask scheduler --host 127.0.0.1 --port "$PORT" --no-dashboard >"$LOGS/scheduler.log" 2>&1 &
pids+=($!)
setsid python -m dask worker "$BENCH_DASK_SCHEDULER" --host 127.0.0.1 --nworkers "$WORKERS" --nthreads 1 \
    --memory-limit 0 --no-dashboard >"$LOGS/workers.log" 2>&1 &
pids+=($!)
python - "$WORKERS" <<'PY'
import os
import sys

from distributed import Client

with Client(os.environ["BENCH_DASK_SCHEDULER"], timeout=60, set_as_default=False) as client:
    client.wait_for_workers(int(sys.argv[1]), timeout=120)
PY
echo "dask_by_hand: scheduler $BENCH_DASK_SCHEDULER, $WORKERS workers ready (logs in $LOGS)" >&2
"$@"
