#!/usr/bin/env bash
# The full results grid (README, "Results"): each dataset's tuning, then its tables' cells, seeds 0-2.
#
#   bash scripts/grid.sh [STAGE ...] [-- BENCH_ARGS ...]
#
# STAGE: mnist, tune-omniglot, omniglot, tune-cifar10, cifar10 (default: all, in this order).
# BENCH_ARGS go to every bench command, e.g. `-- --jobs 2` or `-- --executor dask --scheduler ADDR`.
# DATA_ROOT: a data root holding MNIST, Omniglot and CIFAR-10, as ../shared/data/make_data_root.py
# lays out (default: $BENCH_DATA_ROOT, else ./data).
#
# Resumable: every finished cell and trial has a record and is skipped, so after an interruption
# run the same command again. A tuning stage writes its choices into bench/protocols/*.toml: commit
# them before the stage that runs the cells, so the records name a committed protocol.
set -euo pipefail

stages=()
while (($#)) && [[ $1 != -- ]]; do stages+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
((${#stages[@]})) || stages=(mnist tune-omniglot omniglot tune-cifar10 cifar10)

root=${DATA_ROOT:-${BENCH_DATA_ROOT:-./data}}
common=(--data-root "$root" --no-download --threads 1 "$@")
bench() { echo "+ python -m bench $*" >&2; python -m bench "$@"; }

for stage in "${stages[@]}"; do
  case $stage in
    mnist)  # tuned in earlier sessions (trial records in results/tune/runs/)
      bench run --scenario class-il --seeds 3 "${common[@]}"
      bench run --scenario class-il --memory 0 --seeds 3 "${common[@]}"
      bench run --scenario task-il --seeds 3 "${common[@]}" ;;
    tune-omniglot)  # trials of 5 of the protocol's 10 epochs, for every method alike
      bench tune --scenario task-il --dataset omniglot --epochs 5 "${common[@]}" ;;
    omniglot)
      bench run --scenario task-il --dataset omniglot --seeds 3 "${common[@]}" ;;
    tune-cifar10)  # trials of 1 epoch, for every method alike
      bench tune --scenario class-il --dataset cifar10 --epochs 1 "${common[@]}"
      bench tune --scenario class-il --dataset cifar10 --memory 0 --epochs 1 "${common[@]}"
      bench tune --scenario task-il --dataset cifar10 --epochs 1 "${common[@]}" ;;
    cifar10)
      bench run --scenario class-il --dataset cifar10 --seeds 3 "${common[@]}"
      bench run --scenario class-il --dataset cifar10 --memory 0 --seeds 3 "${common[@]}"
      bench run --scenario task-il --dataset cifar10 --seeds 3 "${common[@]}" ;;
    *) echo "grid.sh: unknown stage $stage (mnist, tune-omniglot, omniglot, tune-cifar10, cifar10)" >&2; exit 2 ;;
  esac
done
