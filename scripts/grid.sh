#!/usr/bin/env bash
# The full results grid (README, "Results"): each dataset's tuning at the protocol's length, then
# its tables' cells: Split-MNIST at seeds 0-9, Omniglot and Split-CIFAR-10 at seeds 0-2.
#
#   bash scripts/grid.sh [STAGE ...] [-- BENCH_ARGS ...]
#
# STAGE: tune-mnist, tune-cifar10, tune-omniglot, mnist, cifar10, omniglot (default: all, in this
# order). A tune stage runs each protocol's search (every method with a search space, the
# protocol's epochs), then `bench tune --top-up` on it: a method the tuning ledger shows short of
# looks gets the difference as more seeds of its points (docs/protocol.md, "Tuning").
# BENCH_ARGS go to every bench command, e.g. `-- --jobs 2` or `-- --executor dask --scheduler ADDR`.
# DATA_ROOT: a data root holding MNIST, Omniglot and CIFAR-10, as ../shared/data/make_data_root.py
# lays out (default: $BENCH_DATA_ROOT, else ./data). MNIST_SEEDS (default 10) and SEEDS (default
# 3): the seeds of the Split-MNIST tables and of the others.
#
# Resumable: every finished cell and trial has a record and is skipped, so after an interruption
# run the same command again. A tuning stage writes its choices into bench/protocols/*.toml: commit
# them before the stage that runs the cells, so the records name a committed protocol.
set -euo pipefail

stages=()
while (($#)) && [[ $1 != -- ]]; do stages+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
((${#stages[@]})) || stages=(tune-mnist tune-cifar10 tune-omniglot mnist cifar10 omniglot)

root=${DATA_ROOT:-${BENCH_DATA_ROOT:-./data}}
common=(--data-root "$root" --no-download --threads 1 "$@")
bench() { echo "+ python -m bench $*" >&2; python -m bench "$@"; }
tune() {  # one protocol (and memory): its search, then the looks it is short of
  bench tune "$@" "${common[@]}"
  bench tune "$@" --top-up "${common[@]}"
}
tables() {  # DATASET SEEDS: its Class-IL tables (with the protocol's memory and without) and Task-IL
  local dataset=$1 seeds=$2
  if [[ $dataset != omniglot ]]; then  # Omniglot Class-IL does not fit the budget (docs/results.md)
    bench run --scenario class-il --dataset "$dataset" --seeds "$seeds" "${common[@]}"
    bench run --scenario class-il --dataset "$dataset" --memory 0 --seeds "$seeds" "${common[@]}"
  fi
  bench run --scenario task-il --dataset "$dataset" --seeds "$seeds" "${common[@]}"
}

for stage in "${stages[@]}"; do
  case $stage in
    tune-mnist|tune-cifar10)
      dataset=${stage#tune-}
      tune --scenario class-il --dataset "$dataset"
      tune --scenario class-il --dataset "$dataset" --memory 0
      tune --scenario task-il --dataset "$dataset" ;;
    tune-omniglot)
      tune --scenario task-il --dataset omniglot ;;
    mnist) tables mnist "${MNIST_SEEDS:-10}" ;;
    cifar10|omniglot) tables "$stage" "${SEEDS:-3}" ;;
    *) echo "grid.sh: unknown stage $stage (tune-mnist, tune-cifar10, tune-omniglot, mnist, cifar10, omniglot)" >&2
       exit 2 ;;
  esac
done
