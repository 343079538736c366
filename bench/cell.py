"""One cell: a strategy trained task by task on one dataset and scenario with one seed.

`run_cell` trains, evaluates every seen task after every task (the accuracy
matrix), and returns the run record. It runs inside a worker process started by
`bench.runner`, which writes the record.
"""
from __future__ import annotations

import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from tqdm import tqdm

from bench import loggers, metrics, models, registry
from bench.datasets import load_dataset
from bench.provenance import provenance
from bench.scenarios import build_benchmark, holdout_split, task_split
from bench.strategy import StrategyContext



def seed_everything(seed: int, threads: int) -> None:
    """Seed python, numpy and torch and make torch deterministic.

    The thread count is part of what fixes the numbers: CPU reductions split
    their work by thread, so the same seed with another thread count can give
    different bits. The runner therefore uses one count for every cell.
    """
    warnings.filterwarnings("ignore", message="No loggers specified")
    # Avalanche's ParamData.expand indexes with a list of slices; torch still reads it as a tuple
    warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
    # Deterministic cuBLAS needs a fixed workspace, set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


class AccuracyPlugin(SupervisedPlugin):
    """Accuracy per evaluated experience, from the strategy's own predictions (argmax of mb_output)."""

    def __init__(self):
        super().__init__()
        self.accuracy: dict[int, float] = {}
        self._correct = self._seen = 0

    def before_eval_exp(self, strategy, **kwargs):
        self._correct = self._seen = 0

    def after_eval_iteration(self, strategy, **kwargs):
        self._correct += int((strategy.mb_output.argmax(1) == strategy.mb_y).sum())
        self._seen += len(strategy.mb_y)

    def after_eval_exp(self, strategy, **kwargs):
        self.accuracy[strategy.experience.current_experience] = self._correct / max(1, self._seen)


class GuardPlugin(SupervisedPlugin):
    """Stops a cell whose loss is not finite, and drives the progress bar."""

    def __init__(self, bar: tqdm):
        super().__init__()
        self.bar = bar
        self.epoch = 0

    def before_training_exp(self, strategy, **kwargs):
        self.epoch = 0

    def after_training_iteration(self, strategy, **kwargs):
        loss = float(strategy.loss.detach())
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} in task {strategy.experience.current_experience}, "
                                     f"epoch {self.epoch + 1}")

    def after_training_epoch(self, strategy, **kwargs):
        self.epoch += 1
        self.bar.set_postfix_str(f"task {strategy.experience.current_experience + 1} epoch {self.epoch}")
        self.bar.update(1)


class CurvesPlugin(SupervisedPlugin):
    """Training loss and accuracy per epoch, one entry per training call (per task; joint: one).

    The loss is `strategy.loss`, the whole objective with any penalty (EWC, distillation,
    IB sparsity), as Avalanche's Loss_Epoch metric reads it; accuracy compares the training
    outputs' argmax with the labels, as its Top1_Acc_Epoch does.
    """

    def __init__(self):
        super().__init__()
        self.curves: list[dict[str, list[float]]] = []
        self._loss, self._correct, self._seen = 0.0, 0, 0

    def before_training_exp(self, strategy, **kwargs):
        self.curves.append({"loss": [], "acc": []})

    def before_training_epoch(self, strategy, **kwargs):
        self._loss, self._correct, self._seen = 0.0, 0, 0

    def after_training_iteration(self, strategy, **kwargs):
        n = len(strategy.mb_y)
        self._loss += float(strategy.loss.detach()) * n
        self._correct += int((strategy.mb_output.argmax(1) == strategy.mb_y).sum())
        self._seen += n

    def after_training_epoch(self, strategy, **kwargs):
        seen = max(1, self._seen)
        self.curves[-1]["loss"].append(round(self._loss / seen, 6))
        self.curves[-1]["acc"].append(round(self._correct / seen, 6))


class PeakMemory:
    """Peak resident memory of this process from now on (Linux: resets the kernel's high-water mark)."""

    def __init__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    @staticmethod
    def mb() -> float:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tensor_bytes(obj: Any, seen: set[int] | None = None, depth: int = 0) -> int:
    """Bytes of the tensors an object holds (through attributes, containers and modules)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, torch.nn.Module):
        return sum(tensor_bytes(t, seen, depth + 1) for t in [*obj.parameters(), *obj.buffers()])
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(tensor_bytes(v, seen, depth + 1) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sum(tensor_bytes(v, seen, depth + 1) for v in vars(obj).values())
    return 0


def usable_params(model: torch.nn.Module) -> int:
    from bench.heads import usable_params as usable  # heads import Avalanche's models

    return usable(model)


def extra_state_bytes(strategy, plugins: list, baseline_params: int) -> int:
    """What a method keeps beyond the plain network: plugin state (Fisher and old weights, old
    models, exemplars) plus parameters beyond the plain backbone and heads (extra columns, growth)."""
    held = sum(tensor_bytes(p) for p in plugins)
    # parameters live in the model, not in the state a method adds
    model_ids = {id(p) for p in strategy.model.parameters()}
    held -= sum(p.numel() * p.element_size() for p in _held_params(plugins) if id(p) in model_ids)
    extra_params = max(0, usable_params(strategy.model) - baseline_params)
    return held + extra_params * 4


def _held_params(plugins: list) -> list[torch.Tensor]:
    return [p for plugin in plugins for v in vars(plugin).values()
            if isinstance(v, torch.nn.Module) for p in v.parameters()]


def run_cell(config: dict[str, Any], data_root: str, threads: int = 1, progress: bool = True,
             device: str = "cpu", bar_position: int = 0, log: Sequence[str] = (),
             log_dir: Path | None = None) -> dict[str, Any]:
    """Train and evaluate one cell; returns its record (status ok). Exceptions propagate.

    `log`: Avalanche loggers (`bench.loggers.LOGGERS`) writing under `log_dir`; they watch
    the cell and change none of its numbers (the record is the same with or without them).
    """
    start, cpu_start = time.time(), time.process_time()
    peak = PeakMemory()
    seed_everything(config["seed"], threads)
    data = load_dataset(config["dataset"], data_root, download=False)
    if config["holdout"]:
        data = holdout_split(data, config["holdout"])
    split = task_split(data)
    bench = build_benchmark(data, config["scenario"])
    info = registry.get(config["strategy"])
    ctx = StrategyContext(
        dataset=config["dataset"], scenario=config["scenario"], split=split,
        memory=config["memory"], epochs=config["epochs"], batch_size=config["batch_size"],
        eval_batch_size=config["eval_batch_size"], optimizer=config["optimizer"],
        params=config["params"], backbone=config["backbone"], seed=config["seed"], device=device,
        augment=config.get("augment", False), memory_kind=info.memory)
    close_logs = None
    if log:
        ctx.evaluator, close_logs = loggers.evaluator(log, log_dir)
    strategy = info.build(ctx)
    # the evaluator is a plugin too, but holds no method state
    method_plugins = [p for p in strategy.plugins if p is not strategy.evaluator]

    n_tasks = split.n_tasks
    epochs_total = config["epochs"] * (1 if info.whole_stream else n_tasks)
    label = f"{config['dataset']} {config['scenario']} {config['strategy']} seed {config['seed']}"
    bar = tqdm(total=epochs_total, desc=label, unit="epoch", disable=not progress, leave=False,
               position=bar_position)
    accuracy, curves = AccuracyPlugin(), CurvesPlugin()
    strategy.plugins.extend([accuracy, curves, GuardPlugin(bar)])

    report = _plugin_report(method_plugins)  # the IB plugin reports its network state per task
    rows: list[list[float | None]] = []
    per_task: list[dict[str, Any]] = []
    # whatever stores training data says how much it holds (the exemplars_held convention)
    stores = [p for p in (strategy, *method_plugins) if hasattr(p, "exemplars_held")]
    check_stores(config["strategy"], info.memory, config["memory"], stores)
    held: list[int] = []
    try:
        if info.whole_stream:
            strategy.train(bench.train_stream)
            rows.append(_evaluate(strategy, accuracy, bench.test_stream, n_tasks, n_tasks))
            held.append(held_within_budget(config, stores, n_tasks))
        else:
            for i, experience in enumerate(bench.train_stream):
                strategy.train(experience)
                rows.append(_evaluate(strategy, accuracy, bench.test_stream[: i + 1], i + 1, n_tasks))
                held.append(held_within_budget(config, stores, i + 1))
                if report is not None:
                    per_task.append(report())
    finally:
        bar.close()
        # loggers never fail a cell: what they could not write is noted in the record
        logs_missing = close_logs() if close_logs is not None else []

    features = ctx.features()
    baseline = models.count_params(features) + (features.out_features + 1) * split.n_classes
    record: dict[str, Any] = {
        "status": "ok",
        "error": None,
        "config": config,
        "acc_matrix": rows,
        "metrics": metrics.summarize(rows),
        "train_curves": curves.curves,
        "time_s": round(time.time() - start, 2),
        # CPU seconds of the cell's process: a cost that other work on the machine barely changes
        "cpu_s": round(time.process_time() - cpu_start, 2),
        "peak_rss_mb": round(peak.mb(), 1),
        "params": usable_params(strategy.model),  # masked head units no task can use are not counted
        "extra_state_bytes": extra_state_bytes(strategy, method_plugins, baseline),
        "exemplars_held": held if stores else None,  # after each task; None: stores no data
        # trained with the matched buffer besides its own method (shown as `<name> + replay`)
        # (replay and its variants, replay_ncm and replay_at_ib_size, are that buffer itself)
        "shared_replay": info.memory == "shared" and config["memory"] > 0
        and not config["strategy"].startswith("replay"),
        "data_checksums": data.checksums,
        "data_official": data.official,
        "data_mismatched": data.mismatched,
        "data_unverified": data.unverified,
        "device": device,
        "threads": threads,
        **provenance(info.module.__name__),
    }
    if per_task:
        record["per_task"] = per_task
    if logs_missing:  # the result stands; its logs under log_dir are incomplete
        record["logs_missing"] = logs_missing
    return record


class MemoryBudgetError(RuntimeError):
    """A strategy stores more than the cell's budget, or does not say what it stores."""


def check_stores(name: str, kind: str, budget: int, stores: list) -> None:
    """A strategy that keeps exemplars must expose what it holds (`exemplars_held()`), so that the
    budget can be checked; raises MemoryBudgetError before any training when nothing does."""
    if kind in ("shared", "own") and budget > 0 and not stores:
        raise MemoryBudgetError(
            f"{name} declares MEMORY = {kind!r} with a budget of {budget} exemplars, but neither its "
            f"strategy nor any of its plugins has exemplars_held(): give the object that stores the "
            f"exemplars an exemplars_held() method returning how many it holds (docs/extending.md)")


def held_within_budget(config: dict[str, Any], stores: list, tasks_done: int) -> int:
    """Exemplars held after a task, all stores together; MemoryBudgetError when over the budget."""
    held = sum(int(p.exemplars_held()) for p in stores)
    if held > config["memory"]:
        raise MemoryBudgetError(f"{config['strategy']} holds {held} exemplars after task {tasks_done}, "
                                f"over the cell's budget of {config['memory']}")
    return held


def _plugin_report(plugins: list):
    for plugin in plugins:
        if hasattr(plugin, "task_report"):
            return plugin.task_report
    return None


def _evaluate(strategy, accuracy: AccuracyPlugin, experiences, n_seen: int, n_tasks: int) -> list[float | None]:
    accuracy.accuracy.clear()
    strategy.eval(experiences)
    return [round(accuracy.accuracy[j], 6) if j < n_seen else None for j in range(n_tasks)]
