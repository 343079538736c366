"""What the grid cost: cell-hours per dataset, table and method, from the records (read only).

    python scripts/grid_cost.py [--results results]
    python scripts/grid_cost.py --estimate mnist=10,omniglot-task-il=3,cifar10=3 [--results results]

Reads every record under RESULTS/runs (the grid's cells) and RESULTS/tune/runs (tuning trials)
and prints one line per (part, dataset, table, method): cells, wall hours (`time_s`), CPU hours
(`cpu_s`), and the method's CPU ratio to naive on the same stream: the mean over the cells of
`cpu_s` / naive's `cpu_s` with the same dataset, scenario, epochs, hold-out and seed (blank where
naive has no such cell). A table is a scenario at one replay budget (the budget a cell used:
memory-free methods sit at memory 0). Totals per part close the listing.

--estimate: what a grid at those seeds would cost, before it runs. A key is a dataset (both
scenarios) or DATASET-SCENARIO; Class-IL is planned at the protocol's memory and at 0. Every
registered method that applies is planned, as `bench run` plans it (a memory-free method once per
stream), and each gets the mean wall time of its cells in RESULTS/runs at the protocol's epochs
(else of its tuning trials at those epochs). The tuning that is left is listed per method with a
search space: the trials its search at the protocol's length still needs by today's code (the
trials of today's points at seed 0 that have no record by the code a cell runs now) and the trials
`bench tune --top-up` would add after it (bench/tune.py's rule, applied to the ledger as it will
stand once the searches are done), priced the same way. Methods with no cell at the protocol's
epochs are listed as unmeasured and left out of the sums. The times are those of the code that made
the records: a method changed since costs what it costs now.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable

PARTS = {"grid": Path("runs"), "tune": Path("tune") / "runs"}


def load_records(folder: Path) -> list[dict]:
    """The records in `folder` that carry a CPU time (any status: a failed cell cost time too)."""
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            print(f"skipped unreadable record {path}", file=sys.stderr)
            continue
        if isinstance(record.get("cpu_s"), (int, float)) and isinstance(record.get("config"), dict):
            records.append(record)
    return records


def _stream(config: dict) -> tuple:
    return (config["dataset"], config["scenario"], config.get("epochs"), config.get("holdout"), config.get("seed"))


def cost_rows(records: Iterable[dict]) -> list[dict]:
    """One row per (dataset, table, method): cells, wall and CPU hours, CPU ratio to naive on the same stream."""
    records = list(records)
    naive = {_stream(r["config"]): r["cpu_s"] for r in records
             if r["config"]["strategy"] == "naive" and r["cpu_s"] > 0}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        c = r["config"]
        groups[(c["dataset"], f"{c['scenario']} memory {c.get('memory', 0)}", c["strategy"])].append(r)
    rows = []
    for (dataset, table, method), group in sorted(groups.items()):
        ratios = [r["cpu_s"] / naive[_stream(r["config"])] for r in group if _stream(r["config"]) in naive]
        rows.append({"dataset": dataset, "table": table, "method": method, "cells": len(group),
                     "wall_h": sum(float(r.get("time_s") or 0.0) for r in group) / 3600,
                     "cpu_h": sum(r["cpu_s"] for r in group) / 3600,
                     "cpu_vs_naive": sum(ratios) / len(ratios) if ratios else None})
    return rows


def render(part: str, rows: list[dict]) -> str:
    lines = [f"{'part':<5} {'dataset':<9} {'table':<20} {'method':<11} {'cells':>5} {'wall h':>7} {'CPU h':>7} "
             f"{'CPU/naive':>9}"]
    for row in rows:
        ratio = "" if row["cpu_vs_naive"] is None else f"{row['cpu_vs_naive']:.2f}"
        lines.append(f"{part:<5} {row['dataset']:<9} {row['table']:<20} {row['method']:<11} {row['cells']:>5} "
                     f"{row['wall_h']:>7.2f} {row['cpu_h']:>7.2f} {ratio:>9}")
    cells = sum(r["cells"] for r in rows)
    lines.append(f"{part} total: {cells} cells, {sum(r['wall_h'] for r in rows):.2f} cell-hours "
                 f"(wall), {sum(r['cpu_h'] for r in rows):.2f} CPU hours")
    return "\n".join(lines)


def planned_tables(key: str) -> list[tuple[str, str, int]]:
    """(dataset, scenario, memory) of the tables an --estimate key names."""
    from bench import config as cfg

    dataset, _, scenario = key.partition("-")
    tables = []
    for scen in [scenario] if scenario else ["class-il", "task-il"]:
        protocol = cfg.load_protocol(dataset, scen)
        memory = int(protocol.get("memory") or 0)
        tables += [(dataset, scen, m) for m in ([memory, 0] if scen == "class-il" and memory else [memory])]
    return tables


def estimate(plan: dict[str, int], results: Path) -> str:
    """The estimate's listing: per planned cell group its seeds and hours, per table its tuning."""
    from bench import config as cfg
    from bench import registry

    known = registry.strategies()
    records = [r for sub in PARTS.values() if (results / sub).is_dir() for r in load_records(results / sub)]
    lines = [f"{'dataset':<9} {'table':<20} {'method':<18} {'seeds':>5} {'h/cell':>7} {'cell-h':>7}  from"]
    planned: dict[tuple, int] = {}  # (dataset, scenario, memory used, method) -> seeds
    tables: set[tuple[str, str, int]] = set()
    for key, seeds in plan.items():
        for dataset, scenario, memory in planned_tables(key):
            tables.add((dataset, scenario, memory))
            protocol = cfg.load_protocol(dataset, scenario)
            for name, info in known.items():
                if info.why_not(dataset, scenario, memory, protocol.get("backbone")) is not None:
                    continue
                used = _memory_used(info, memory)
                planned[(dataset, scenario, used, name)] = max(seeds, planned.get((dataset, scenario, used, name), 0))
    total, unmeasured = 0.0, []
    for (dataset, scenario, memory, name), seeds in sorted(planned.items()):
        epochs = cfg.load_protocol(dataset, scenario).get("epochs")
        hours, source = _cell_hours(records, dataset, scenario, memory, name, epochs)
        table = f"{scenario} memory {memory}"
        if hours is None:
            unmeasured.append(f"{dataset} {table} {name}")
            lines.append(f"{dataset:<9} {table:<20} {name:<18} {seeds:>5} {'?':>7} {'?':>7}  unmeasured")
            continue
        total += seeds * hours
        lines.append(f"{dataset:<9} {table:<20} {name:<18} {seeds:>5} {hours:>7.3f} {seeds * hours:>7.2f}  {source}")
    lines.append(f"grid: {sum(planned.values())} cells, {total:.1f} cell-hours measured "
                 f"(~{total / 2:.1f} hours two at a time), {len(unmeasured)} method-tables unmeasured")
    lines += ["", f"{'dataset':<9} {'table':<20} {'method':<18} {'search':>6} {'top-up':>6} {'h/trial':>7} "
                  f"{'cell-h':>7}  (tuning left)"]
    tune_total, tune_trials, tune_unmeasured = 0.0, [0, 0], 0
    for dataset, scenario, memory in sorted(tables):
        epochs = cfg.load_protocol(dataset, scenario).get("epochs")
        for name, used, search, top_up in tuning_left(records, results, dataset, scenario, memory):
            tune_trials[0] += search
            tune_trials[1] += top_up
            if not search + top_up:
                continue
            hours, _ = _cell_hours(records, dataset, scenario, used, name, epochs)
            table = f"{scenario} memory {used}"
            if hours is None:
                tune_unmeasured += 1
                lines.append(f"{dataset:<9} {table:<20} {name:<18} {search:>6} {top_up:>6} {'?':>7} {'?':>7}")
                continue
            tune_total += (search + top_up) * hours
            lines.append(f"{dataset:<9} {table:<20} {name:<18} {search:>6} {top_up:>6} {hours:>7.3f} "
                         f"{(search + top_up) * hours:>7.2f}")
    lines.append(f"tuning left: {sum(tune_trials)} trials ({tune_trials[0]} in searches, {tune_trials[1]} in "
                 f"top-ups), {tune_total:.1f} cell-hours measured (~{tune_total / 2:.1f} hours two at a time), "
                 f"{tune_unmeasured} method-tables unmeasured")
    return "\n".join(lines)


def tuning_left(records: list[dict], results: Path, dataset: str, scenario: str,
                memory: int) -> list[tuple[str, int, int, int]]:
    """(method, memory its trials use, trials its search still needs, trials a top-up would add
    after it) for each method that `bench tune` would search at this protocol and memory."""
    from bench import config as cfg
    from bench import registry
    from bench.summary import current_code
    from bench.tune import looks_at, search_spaces, top_up_seeds, trial_points

    known = registry.strategies()
    protocol = cfg.load_protocol(dataset, scenario)
    budget, spaces = search_spaces(protocol, known, memory)
    chosen = [name for name in spaces
              if known[name].why_not(dataset, scenario, memory, protocol.get("backbone")) is None]
    points = {name: trial_points(spaces[name], budget, 0) for name in chosen}
    used = {name: _memory_used(known[name], memory) for name in chosen}
    done: dict[str, list[int]] = {}  # today's search's trials with a record by today's code: their seeds
    for r in records:
        c = r["config"]
        name = c["strategy"]
        if (name in points and c.get("holdout") and r.get("status") == "ok"
                and (c["dataset"], c["scenario"], int(c.get("memory") or 0)) == (dataset, scenario, used[name])
                and c.get("epochs") == protocol.get("epochs")
                and r.get("code") == current_code(name)
                and any(all(c.get("params", {}).get(k) == v for k, v in point.items()) for point in points[name])):
            done.setdefault(name, []).append(int(c.get("seed") or 0))
    search = {name: len(points[name]) - min(len(points[name]), done.get(name, []).count(0)) for name in chosen}
    looks = looks_at(results, dataset, scenario, memory)
    after = {name: (trials + search.get(name, 0), top_up) for name, (trials, top_up) in looks.items()}
    after.update({name: (search[name], 0) for name in chosen if name not in looks})
    left = []
    for name in chosen:
        n, ours = len(points[name]), len(done.get(name, [])) + search[name]
        seeds = top_up_seeds(after, name, n, ours)
        left.append((name, used[name], search[name], max(0, seeds * n - ours)))
    return left


def _memory_used(info, memory: int) -> int:
    """The replay budget a method's cells run with at a table's memory (bench/plan.py's rule)."""
    return memory if info.memory in ("shared", "own") else 0


def _cell_hours(records: list[dict], dataset: str, scenario: str, memory: int, name: str,
                epochs: int | None) -> tuple[float | None, str]:
    """Mean wall hours of the method's cells at the protocol's epochs: grid cells, else tuning trials."""
    for holdout, source in ((False, "grid cells"), (True, "tuning trials")):
        times = [float(r.get("time_s") or 0.0) for r in records
                 if (c := r["config"])["dataset"] == dataset and c["scenario"] == scenario
                 and int(c.get("memory") or 0) == memory and c["strategy"] == name and c.get("epochs") == epochs
                 and bool(c.get("holdout")) == holdout]
        if times:
            return sum(times) / len(times) / 3600, f"{source} ({len(times)})"
    return None, ""


def _plan(text: str) -> dict[str, int]:
    plan = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, seeds = item.partition("=")
        if not seeds.isdigit() or int(seeds) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: expected DATASET[-SCENARIO]=SEEDS, seeds a whole number >= 1")
        plan[key] = int(seeds)
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="the results folder (runs/ and tune/runs/ in it)")
    parser.add_argument("--estimate", type=_plan, metavar="DATASET[-SCENARIO]=SEEDS,...",
                        help="estimate a grid at these seeds from the records instead of summing them")
    args = parser.parse_args(argv)
    results = Path(args.results)
    if not (results / PARTS["grid"]).is_dir() and not (results / PARTS["tune"]).is_dir():
        print(f"error: no records: neither {results / PARTS['grid']} nor {results / PARTS['tune']} is a folder",
              file=sys.stderr)
        return 2
    if args.estimate:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from bench import config as cfg

        try:
            print(estimate(args.estimate, results))
        except cfg.ConfigError as exc:
            print(f"error: --estimate: {exc}", file=sys.stderr)
            return 2
        return 0
    for part, sub in PARTS.items():
        if (results / sub).is_dir():
            print(render(part, cost_rows(load_records(results / sub))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
