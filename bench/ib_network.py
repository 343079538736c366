"""The line under a table on IB's network: what it grew to and what each task cost it.

IB's records carry `per_task`, the plugin's report after every task (channels active and layer
widths, channels capped, parameters, training seconds). A table shows the final parameter count;
this line adds how the network got there, so a reader can weigh IB's accuracy against its size
and its cost per task without opening the records.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from bench.records import is_number, record_path
from bench.significance import IB_ROWS


def _ib_records(records: Sequence[dict], rows: pd.DataFrame) -> dict[str, list[dict]]:
    """The ok IB records behind a table's rows, by row label (one entry per IB configuration).

    A record without what the line reads (a parameter count, layer widths of the first and last
    task, as many layers as the others of its row) is left out with a warning naming its file."""
    labels = dict(zip(rows["hash"], rows["label"]))
    found: dict[str, list[dict]] = {}
    for record in records:
        cfg = record["config"]
        if (record["status"] == "ok" and cfg["strategy"] in IB_ROWS and cfg["hash"] in labels
                and isinstance(record.get("per_task"), list) and record["per_task"]):
            group = found.setdefault(labels[cfg["hash"]], [])
            problem = _unreadable(record, group[0] if group else None)
            if problem:
                name = record_path(Path("runs"), cfg).name
                print(f"warning: IB's network line leaves out {name}: {problem}", file=sys.stderr)
            else:
                group.append(record)
    return {label: group for label, group in found.items() if group}


def _unreadable(record: dict, first: dict | None) -> str | None:
    """What `_describe` cannot read in `record` (checked against `first`, another record of its row)."""
    if not is_number(record.get("params")):
        return "no parameter count ('params')"
    ends = (record["per_task"][0], record["per_task"][-1])
    if not all(isinstance(t, dict) and isinstance(t.get("widths"), list) for t in ends):
        return "no layer widths in 'per_task'"
    if first is not None and len(ends[0]["widths"]) != len(first["per_task"][0]["widths"]):
        return "a number of layers unlike the other seeds of its row"
    return None


def _slash(values: Sequence[float]) -> str:
    return "/".join(f"{v:.0f}" for v in values)


def grew_share(per_task: Sequence[dict]) -> float:
    """The share of (task, layer) pairs after the first task in which the layer grew (growth is
    decided as a task arrives; the reference reports about 25% on Omniglot)."""
    pairs = [k for task in per_task[1:] for k in task.get("grown") or []]
    return sum(k > 0 for k in pairs) / len(pairs) if pairs else 0.0


def _describe(records: list[dict], rows: pd.DataFrame) -> str:
    last = [r["per_task"][-1] for r in records]
    n_tasks = len(records[0]["per_task"])
    widths = np.mean([t["widths"] for t in last], axis=0)
    initial = np.mean([r["per_task"][0]["widths"] for r in records], axis=0)
    params = np.mean([r["params"] for r in records])
    text = f"{params:,.0f} parameters after the last task"
    naive = rows.loc[rows["strategy"] == "naive", "params_mean"]
    if len(naive) and is_number(naive.iloc[0]) and naive.iloc[0] > 0:
        text += f" ({params / naive.iloc[0]:.2f} times naive's {naive.iloc[0]:,.0f})"
    text += f"; layer widths {_slash(widths)} (from {_slash(initial)})"
    capped = np.mean([sum(sum(t.get("capped") or []) for t in r["per_task"]) for r in records])
    text += f", {capped:.0f} channel{'s' if round(capped) != 1 else ''} capped over the stream"
    share = np.mean([grew_share(r["per_task"]) for r in records])
    if n_tasks > 1:
        text += f"; a layer grew in {100 * share:.0f}% of the (task, layer) pairs after the first task"
    times = [[t["train_s"] for t in r["per_task"] if is_number(t.get("train_s"))] for r in records]
    if all(len(t) == n_tasks for t in times):
        per_task = np.mean(times, axis=0)
        fifth = n_tasks // 5  # a fifth of a long stream shows a trend that single tasks hide
        ends = (f"{per_task[0]:.1f} s for the first task, {per_task[-1]:.1f} s for the last" if fifth <= 1 else
                f"{per_task[:fifth].mean():.1f} s over the first {fifth} tasks, "
                f"{per_task[-fifth:].mean():.1f} s over the last {fifth}")
        text += f"; training {per_task.mean():.1f} s per task on average ({ends})"
    return text


def ib_network_line(records: Sequence[dict], rows: pd.DataFrame) -> str:
    """One sentence per IB row of the table (means over its ok seeds); "" without IB records."""
    found = _ib_records(records, rows)
    if not found:
        return ""
    several = len(found) > 1
    parts = []
    for label, group in found.items():
        seeds = "one seed" if len(group) == 1 else f"mean over {len(group)} seeds"
        name = f"IB's network ({label}; {seeds})" if several else f"IB's network ({seeds})"
        parts.append(f"{name}: {_describe(group, rows)}.")
    return " ".join(parts)
