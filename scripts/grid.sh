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
# search-DATASET and top-up-DATASET run one half of tune-DATASET, so that every search can come
# before the top-ups (which cost more: scripts/grid_cost.py --estimate lists both).
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
tune() {  # STEPS (tune, search or top-up) of one protocol and memory: its search, the looks it is short of
  local steps=$1; shift
  if [[ $steps != top-up ]]; then bench tune "$@" "${common[@]}"; fi
  if [[ $steps != search ]]; then bench tune "$@" --top-up "${common[@]}"; fi
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
    tune-mnist|tune-cifar10|search-mnist|search-cifar10|top-up-mnist|top-up-cifar10)
      dataset=${stage##*-} steps=${stage%-*}
      tune "$steps" --scenario class-il --dataset "$dataset"
      tune "$steps" --scenario class-il --dataset "$dataset" --memory 0
      tune "$steps" --scenario task-il --dataset "$dataset" ;;
    tune-omniglot|search-omniglot|top-up-omniglot)
      tune "${stage%-*}" --scenario task-il --dataset omniglot ;;
    mnist) tables mnist "${MNIST_SEEDS:-10}" ;;
    cifar10|omniglot) tables "$stage" "${SEEDS:-3}" ;;
    *) echo "grid.sh: unknown stage $stage (tune-, search- or top-up-DATASET; mnist, cifar10, omniglot)" >&2
       exit 2 ;;
  esac
done
