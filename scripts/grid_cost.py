"""What the grid cost: cell-hours per dataset, table and method, from the records (read only).

    python scripts/grid_cost.py [--results results]

Reads every record under RESULTS/runs (the grid's cells) and RESULTS/tune/runs (tuning trials)
and prints one line per (part, dataset, table, method): cells, wall hours (`time_s`), CPU hours
(`cpu_s`), and the method's CPU ratio to naive on the same stream: the mean over the cells of
`cpu_s` / naive's `cpu_s` with the same dataset, scenario, epochs, hold-out and seed (blank where
naive has no such cell). A table is a scenario at one replay budget (the budget a cell used:
memory-free methods sit at memory 0). Totals per part close the listing.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="the results folder (runs/ and tune/runs/ in it)")
    args = parser.parse_args(argv)
    results = Path(args.results)
    if not (results / PARTS["grid"]).is_dir() and not (results / PARTS["tune"]).is_dir():
        print(f"error: no records: neither {results / PARTS['grid']} nor {results / PARTS['tune']} is a folder",
              file=sys.stderr)
        return 2
    for part, sub in PARTS.items():
        if (results / sub).is_dir():
            print(render(part, cost_rows(load_records(results / sub))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
