"""Where the IB method loses Class-IL accuracy: its nearest-class-mean (NCM) step or its features.

Trains `ib` on Split-MNIST Class-IL with the protocol's settings, evaluating on
held-out training data (never the test split), then classifies the held-out
samples three ways with the same final network:
  - NCM with the class means the method keeps (task data + the 200 exemplars);
  - NCM with "oracle" means from all training data of every class;
  - the trained output layer (argmax of the single head).

    python scripts/ib_ncm_diagnostic.py --data-root ../shared/data [--seed 0] [--holdout 0.1]
"""
from __future__ import annotations

import argparse

import torch

from bench import config as cfg
from bench import registry
from bench.cell import seed_everything
from bench.datasets import load_dataset
from bench.scenarios import build_benchmark, holdout_split, task_split
from bench.strategy import StrategyContext
from strategies._ncm import hidden_features
from strategies.ib.plugin import IBPlugin


def nearest_mean(features: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    return torch.cdist(features, means).argmin(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    seed_everything(args.seed, args.threads)
    data = holdout_split(load_dataset("mnist", args.data_root, download=False), args.holdout)
    split = task_split(data)
    protocol = cfg.load_protocol("mnist", "class-il")
    config = cfg.resolve(protocol, "mnist", "class-il", "ib", args.seed, protocol["memory"],
                         schema=registry.get("ib").settings)
    ctx = StrategyContext(dataset="mnist", scenario="class-il", split=split, memory=config["memory"],
                          epochs=config["epochs"], batch_size=config["batch_size"],
                          eval_batch_size=config["eval_batch_size"], optimizer=config["optimizer"],
                          params=config["params"], backbone=config["backbone"], seed=args.seed)
    strategy = registry.get("ib").build(ctx)
    for experience in build_benchmark(data, "class-il").train_stream:
        strategy.train(experience)

    model = strategy.model
    plugin = next(p for p in strategy.plugins if isinstance(p, IBPlugin))
    test = hidden_features(model.features, data.x_test, 1024)
    train = hidden_features(model.features, data.x_train, 1024)
    kept = torch.stack([plugin.class_means[c] for c in range(split.n_classes)])
    oracle = torch.stack([train[data.y_train == c].mean(0) for c in range(split.n_classes)])
    model.eval()
    with torch.no_grad():
        head = torch.cat([model(data.x_test[i:i + 1024]) for i in range(0, len(data.x_test), 1024)])

    def accuracy(pred: torch.Tensor) -> str:
        return f"{100 * (pred == data.y_test).float().mean():.2f}%"

    print(f"held-out accuracy after 5 tasks (seed {args.seed}, {len(data.y_test)} samples):")
    print(f"  NCM, means the method keeps (task data + exemplars)  {accuracy(nearest_mean(test, kept))}")
    print(f"  NCM, oracle means from all training data             {accuracy(nearest_mean(test, oracle))}")
    print(f"  output layer (argmax of the single head)             {accuracy(head.argmax(1))}")
    drift = (kept - oracle).norm(dim=1) / oracle.norm(dim=1)
    print("  relative distance of kept to oracle means, per class: "
          + " ".join(f"{d:.2f}" for d in drift.tolist()))
    print("  active channels per layer after each task: "
          + "; ".join(str(r["active"]) for r in plugin.reports))


if __name__ == "__main__":
    main()
