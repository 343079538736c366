"""Training throughput of the Split-MNIST MLP: a plain loop over tensors, the suite's
Avalanche template (tensor minibatches), and stock Avalanche (per-sample DataLoader).

    python scripts/benchmark_speed.py [--samples 24000] [--epochs 3] [--threads 2]
    python scripts/benchmark_speed.py --ib [--tasks 20]

Prints training samples per second for each (epochs x samples / wall time, the
template's one read of the dataset included); run it on an otherwise idle machine.
With --ib: per-task training time of `ib` against `naive`, one after the other, on a
generated Omniglot-sized Task-IL stream (convnet28, 20 classes x 20 images per task,
batch 32, the Omniglot Task-IL protocol's IB settings), and the ratio.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 2, (n,), generator=g)


def model() -> nn.Module:
    from bench.heads import ClassILNet
    from bench.models import build_features

    return ClassILNet(build_features("mnist"))


def plain_loop(x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int) -> float:
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        for i in torch.randperm(len(y)).split(batch):
            opt.zero_grad()
            loss_fn(net(x[i]), y[i]).backward()
            opt.step()
    return epochs * len(y) / (time.perf_counter() - start)


def avalanche_run(x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, fast: bool) -> float:
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )
    from avalanche.training.templates import SupervisedTemplate

    from bench.strategy import fast as fast_template

    bench = nc_benchmark(tensor_dataset(x, y), tensor_dataset(x[:10], y[:10]), n_experiences=1,
                         task_labels=False, shuffle=False, fixed_class_order=[0, 1])
    net = model()
    cls = fast_template(SupervisedTemplate) if fast else SupervisedTemplate
    strategy = cls(model=net, optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
                   criterion=nn.CrossEntropyLoss(), train_mb_size=batch, train_epochs=epochs,
                   evaluator=None)
    strategy.data_generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    strategy.train(bench.train_stream[0])
    return epochs * len(y) / (time.perf_counter() - start)


def task_times(strategy_name: str, n_tasks: int, epochs: int) -> list[float]:
    """Training seconds per task of a bench strategy on a generated 28x28 Task-IL stream."""
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )

    from bench import config, registry
    from bench.strategy import StrategyContext

    per_class, n_classes = 20, 20 * n_tasks
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_classes * per_class, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    bench = nc_benchmark(tensor_dataset(x, y), tensor_dataset(x[::per_class], y[::per_class]),
                         n_experiences=n_tasks, task_labels=True, shuffle=False,
                         fixed_class_order=list(range(n_classes)), class_ids_from_zero_in_each_exp=True)
    protocol = config.load_protocol("omniglot", "task-il")
    params = dict(protocol.get("strategies", {}).get(strategy_name, {}))
    ctx = StrategyContext(dataset="omniglot", scenario="task-il", split=None, memory=0, epochs=epochs,
                          batch_size=32, eval_batch_size=1000, optimizer=dict(protocol["optimizer"]),
                          params=params)
    torch.manual_seed(0)
    strategy = registry.strategies()[strategy_name].build(ctx)
    times = []
    for experience in bench.train_stream:
        start = time.perf_counter()
        strategy.train(experience)
        times.append(time.perf_counter() - start)
    return times


def ib_ratio(n_tasks: int, epochs: int) -> None:
    naive, ib = task_times("naive", n_tasks, epochs), task_times("ib", n_tasks, epochs)
    print(f"convnet28 Task-IL, {n_tasks} generated tasks x {epochs} epochs, 1 thread (training time only)")
    for name, t in (("naive", naive), ("ib", ib)):
        k = max(1, n_tasks // 5)
        print(f"{name:6} total {sum(t):7.1f} s   first {k} tasks {sum(t[:k]) / k:.2f} s/task"
              f"   last {k} tasks {sum(t[-k:]) / k:.2f} s/task")
    print(f"ib / naive: {sum(ib) / sum(naive):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=24000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ib", action="store_true", help="IB against naive per task instead")
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    if args.ib:
        torch.set_num_threads(1)
        ib_ratio(args.tasks, 1)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = data(args.samples)
    plain_loop(x[:2048], y[:2048], args.batch, 1)  # warm-up: first calls allocate and pick kernels
    b, e = args.batch, args.epochs
    print(f"MLP 784-400-400, batch {b}, {args.samples} samples x {e} epochs, {args.threads} threads")
    print(f"plain loop over tensors      {plain_loop(x, y, b, e):>9,.0f} samples/s")
    print(f"clbench template (tensors)   {avalanche_run(x, y, b, e, fast=True):>9,.0f} samples/s")
    print(f"stock Avalanche (DataLoader) {avalanche_run(x, y, b, e, fast=False):>9,.0f} samples/s")


if __name__ == "__main__":
    main()
