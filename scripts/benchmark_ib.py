"""IB's training cost against naive fine-tuning, task by task, on a generated Omniglot-sized stream.

    python scripts/benchmark_ib.py [--tasks 20] [--epochs 1]

Trains `naive` and then `ib` (one torch thread, one after the other) on the same
generated Task-IL stream: convnet28, 20 classes x 20 images of 28x28 per task,
batch 32, the Omniglot Task-IL protocol's settings. Prints the training time of
the first and last fifth of the tasks (IB's per-task cost must stay flat as the
stream grows) and the ratio ib / naive (the goal is at most 1.5). Training time
only: evaluation grows with the tasks seen for every method alike. Run it on an
otherwise idle machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def generated_stream(n_tasks: int, per_class: int = 20, classes_per_task: int = 20):
    from bench.datasets import ArrayDataset

    n_classes = n_tasks * classes_per_task
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_classes * per_class, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    return ArrayDataset(name="omniglot", x_train=x, y_train=y, x_test=x[::per_class], y_test=y[::per_class],
                        class_names=[str(c) for c in range(n_classes)], checksums={}, mismatched=[],
                        unverified=[], task_of_class=[c // classes_per_task for c in range(n_classes)],
                        task_names=[f"task{t}" for t in range(n_tasks)])


def task_times(strategy_name: str, n_tasks: int, epochs: int) -> list[float]:
    """Training seconds per task of a registered strategy on the generated stream."""
    from bench import config, registry
    from bench.scenarios import build_benchmark, task_split
    from bench.strategy import StrategyContext

    data = generated_stream(n_tasks)
    bench = build_benchmark(data, "task-il")
    info = registry.get(strategy_name)
    protocol = config.load_protocol("omniglot", "task-il")
    cell = config.resolve(protocol, "omniglot", "task-il", strategy_name, 0, 0, schema=info.settings)
    ctx = StrategyContext(dataset="omniglot", scenario="task-il", split=task_split(data), memory=0,
                          epochs=epochs, batch_size=cell["batch_size"], eval_batch_size=cell["eval_batch_size"],
                          optimizer=cell["optimizer"], params=cell["params"], backbone=cell["backbone"])
    torch.manual_seed(0)
    strategy = info.build(ctx)
    times = []
    for experience in bench.train_stream:
        start = time.perf_counter()
        strategy.train(experience)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    times = {name: task_times(name, args.tasks, args.epochs) for name in ("naive", "ib")}
    print(f"convnet28 Task-IL, {args.tasks} generated tasks x {args.epochs} epochs, 1 thread (training time only)")
    k = max(1, args.tasks // 5)
    for name, t in times.items():
        print(f"{name:6} total {sum(t):7.1f} s   first {k} tasks {sum(t[:k]) / k:.2f} s/task"
              f"   last {k} tasks {sum(t[-k:]) / k:.2f} s/task")
    print(f"ib / naive: {sum(times['ib']) / sum(times['naive']):.2f}x")


if __name__ == "__main__":
    main()
