"""The IB sparse network in plain Avalanche code, outside the harness.

Avalanche's own SplitMNIST (5 experiences, classes in order 0..9, Class-IL),
its Naive strategy with its ReplayPlugin (200 exemplars: IB predicts Class-IL by
the nearest class mean, which needs the old classes' samples), the suite's
IBNet and IBPlugin, and Avalanche's evaluator with the InteractiveLogger. After
each experience it prints the accuracy on every experience seen so far and the
channels of the IB network's hidden layers that the experience left active (and
frozen), and how much each full layer grew.

    python scripts/ib_with_avalanche.py --data-root ../shared/data --epochs 1

The data root holds MNIST/raw/ (the four idx files); Avalanche downloads them
there when they are missing and the network allows.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench and strategies from this checkout

# the [strategies.ib] settings of bench/protocols/mnist-class-il.toml
IB_PARAMS = {"gamma": 1e-4, "gate_lr": 0.01, "sigma_init": 0.5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="./data", help="folder with MNIST/raw/ (default ./data)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per experience (default 1)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    import torch
    from avalanche.benchmarks.classic import SplitMNIST
    from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
    from avalanche.logging import InteractiveLogger
    from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
    from avalanche.training.supervised import Naive

    from bench.models import backbone_spec
    from strategies.ib import build_parts

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    benchmark = SplitMNIST(n_experiences=5, fixed_class_order=list(range(10)), dataset_root=args.data_root)
    model, ib = build_parts(backbone_spec("mnist", "mlp"), multi_head=False, params=IB_PARAMS)
    strategy = Naive(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=0.001),
        criterion=torch.nn.CrossEntropyLoss(), train_mb_size=args.batch_size, train_epochs=args.epochs,
        eval_mb_size=1024, plugins=[ReplayPlugin(mem_size=200), ib],
        evaluator=EvaluationPlugin(accuracy_metrics(epoch=True, experience=True, stream=True),
                                   loss_metrics(epoch=True, experience=True, stream=True),
                                   loggers=[InteractiveLogger()]))

    print(f"IB before training: widths {model.features.widths}")
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        results = strategy.eval(benchmark.test_stream[: i + 1])
        accuracy = _per_experience(results)
        shown = ", ".join(f"exp {j}: {100 * a:.1f}%" for j, a in sorted(accuracy.items()))
        print(f"after experience {i} (classes {sorted(experience.classes_in_this_experience)}): "
              f"accuracy {shown}; mean {100 * sum(accuracy.values()) / len(accuracy):.1f}%")
        report = ib.task_report()  # the plugin's account of the task just trained
        print(f"IB after experience {i}: active channels {report['active']} of widths {report['widths']} "
              f"(now frozen); layers grown for it by {report['grown']}")
    return 0


def _per_experience(results: dict) -> dict[int, float]:
    """Avalanche's per-experience test accuracies (Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp003)."""
    out = {}
    for name, value in results.items():
        match = re.fullmatch(r"Top1_Acc_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)", name)
        if match:
            out[int(match.group(1))] = float(value)
    return out


if __name__ == "__main__":
    sys.exit(main())
