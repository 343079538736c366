"""Speed of the harness itself: the suite's `naive` cell against a plain torch loop doing the same work;
with --ib, the IB cell against the strategy that trains on the same data.

    python scripts/benchmark_speed.py [--data-root DIR] [--datasets mnist,cifar10,omniglot] [--epochs 1] [--repeat N]
    python scripts/benchmark_speed.py --ib [--data-root DIR] [--datasets mnist,omniglot] [--epochs N]

Per dataset (MNIST MLP Class-IL, CIFAR-10 convnet Class-IL, Omniglot 50-task
Task-IL stream), both train the protocol's network with its optimizer, batch
size, epochs and augmentation (CIFAR's crop and flip) on the same tensors, task
by task, and evaluate every seen task after each task. Both times include reading
the dataset; neither includes importing Avalanche, which `bench run`'s workers have
imported before a cell starts. Prints the wall time of each and the ratio plain /
suite (>= 0.9 is the goal: the harness costs at most about a tenth). Run it on an
otherwise idle machine; it prints the load average. With --repeat N both run N
times, alternating, and the fastest of each is compared (a run here varies by
several seconds in 80).

--ib: the suite's IB cell and then its comparison cell, `bench run --jobs 1` one after the
other with the protocol's settings (seed 0; --epochs 0: the protocol's epochs) into a scratch
results folder: `replay` in Class-IL (the same memory), `naive` in Task-IL (no memory). Prints
the CPU time of each cell (the record's `cpu_s`) and the ratio ib / other (the goal is at most 1.5).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCENARIO = {"mnist": "class-il", "cifar10": "class-il", "omniglot": "task-il"}
IB_OTHER = {"class-il": "replay", "task-il": "naive"}  # trains on the same data as IB


def naive_config(dataset: str, epochs: int) -> dict:
    from bench import config as cfg
    from bench import registry

    protocol = cfg.load_protocol(dataset, SCENARIO[dataset])
    protocol["epochs"] = epochs
    config = cfg.resolve(protocol, dataset, SCENARIO[dataset], "naive", 0, 0,
                         schema=registry.strategies()["naive"].settings)
    config["hash"] = cfg.config_hash(config)
    return config


def suite(config: dict, data_root: str, threads: int) -> float:
    # imported before the clock starts: `bench run`'s workers fork from a server that has
    # imported it (bench/runner.py), so a cell does not pay Avalanche's ~5 s import
    from bench.cell import run_cell

    start = time.perf_counter()
    run_cell(config, data_root, threads=threads, progress=False)
    return time.perf_counter() - start


class PlainNet(nn.Module):
    """The suite's backbone with plain linear heads: one over all classes (Class-IL, units of
    classes not yet seen masked) or one per task (Task-IL)."""

    def __init__(self, features: nn.Module, head_sizes: list[int]):
        super().__init__()
        self.features = features
        self.heads = nn.ModuleList(nn.Linear(features.out_features, n) for n in head_sizes)

    def forward(self, x: torch.Tensor, head: int = 0) -> torch.Tensor:
        return self.heads[head](self.features(x))


def plain(config: dict, data_root: str, threads: int) -> float:
    from bench import models
    from bench.augment import CropFlip
    from bench.datasets import load_dataset
    from bench.scenarios import task_split

    start = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(config["seed"])
    data = load_dataset(config["dataset"], data_root, download=False)
    split = task_split(data)
    task_il = config["scenario"] == "task-il"
    features = models.build_features(config["dataset"], config["backbone"])
    net = PlainNet(features, [len(c) for c in split.task_classes] if task_il else [split.n_classes])
    local = torch.empty(split.n_classes, dtype=torch.long)  # class -> its index in its task's head
    for classes in split.task_classes:
        local[list(classes)] = torch.arange(len(classes))

    def task_data(classes, x, y):
        keep = torch.isin(y, torch.tensor(classes))
        return x[keep], (local[y[keep]] if task_il else y[keep])

    train = [task_data(c, data.x_train, data.y_train) for c in split.task_classes]
    test = [task_data(c, data.x_test, data.y_test) for c in split.task_classes]
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(config["seed"])
    augment = CropFlip(config["seed"]) if config.get("augment") else (lambda batch: batch)  # as the suite
    seen = 0
    for t, (x, y) in enumerate(train):
        head = t if task_il else 0
        seen += len(split.task_classes[t])
        opt = torch.optim.Adam(net.parameters(), lr=config["optimizer"]["lr"])  # reset per task, as Avalanche
        net.train()
        for _ in range(config["epochs"]):
            for idx in torch.randperm(len(y), generator=generator).split(config["batch_size"]):
                out = net(augment(x[idx]), head)
                if not task_il:
                    out = out[:, :seen]
                opt.zero_grad()
                loss_fn(out, y[idx]).backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            for s in range(t + 1):
                xs, ys = test[s]
                for i in range(0, len(ys), config["eval_batch_size"]):
                    out = net(xs[i:i + config["eval_batch_size"]], s if task_il else 0)
                    (out if task_il else out[:, :seen]).argmax(1)
    return time.perf_counter() - start


def ib_ratios(datasets: list[str], data_root: str, epochs: int, threads: int) -> None:
    """`bench run --jobs 1` of ib and then of the other strategy (each cell in its own worker
    process, as always), into a scratch results folder; the CPU times from their records."""
    import json
    import subprocess
    import tempfile

    for dataset in datasets:
        scenario = SCENARIO[dataset]
        other = IB_OTHER[scenario]
        with tempfile.TemporaryDirectory() as results:
            command = [sys.executable, "-m", "bench", "run", "--scenario", scenario, "--dataset", dataset,
                       "--strategies", f"ib,{other}", "--seed", "0", "--jobs", "1", "--threads", str(threads),
                       "--data-root", str(Path(data_root).resolve()), "--no-download", "--results", results,
                       *(["--epochs", str(epochs)] if epochs else [])]
            done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
            if done.returncode:
                sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
            cpu = {}
            for path in Path(results, "runs").glob("*.json"):
                record = json.loads(path.read_text())
                cpu[record["config"]["strategy"]] = record["cpu_s"]
                epochs_run = record["config"]["epochs"]
        print(f"{dataset:<9} {scenario:<9} {epochs_run} epoch(s)   ib {cpu['ib']:8.2f} s   "
              f"{other} {cpu[other]:8.2f} s   ib/{other} {cpu['ib'] / cpu[other]:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT", "./data"))
    parser.add_argument("--datasets", default="mnist,cifar10,omniglot")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per task (--ib: 0 is the protocol's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ib", action="store_true", help="IB's cell against the strategy on the same data")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run plain and suite N times each, alternating; compare the fastest of each")
    args = parser.parse_args()
    epochs = args.epochs or "the protocol's"
    print(f"{epochs} epoch(s) per task, {args.threads} thread(s), load average before: {os.getloadavg()}")
    if args.ib:
        ib_ratios(args.datasets.split(","), args.data_root, args.epochs, args.threads)
        print(f"load average after: {os.getloadavg()}")
        return
    for dataset in args.datasets.split(","):
        config = naive_config(dataset, args.epochs)
        from bench.datasets import load_dataset
        load_dataset(dataset, args.data_root, download=False)  # fills the cache that both then read
        # alternating, so that a slower spell of the machine falls on both; the fastest of each is
        # the least disturbed (as timeit takes the minimum)
        times: dict[str, list[float]] = {"plain": [], "suite": []}
        for _ in range(args.repeat):
            times["plain"].append(plain(config, args.data_root, args.threads))
            times["suite"].append(suite(config, args.data_root, args.threads))
        plain_s, suite_s = min(times["plain"]), min(times["suite"])
        runs = "" if args.repeat == 1 else "   (" + "; ".join(
            f"{k} " + ", ".join(f"{t:.1f}" for t in v) for k, v in times.items()) + ")"
        print(f"{dataset:<9} {config['scenario']:<9} {config['backbone']:<10} batch {config['batch_size']:<4} "
              f"plain loop {plain_s:7.1f} s   suite naive {suite_s:7.1f} s   plain/suite {plain_s / suite_s:.2f}{runs}",
              flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
