"""Plots from run records, under `<results>/plots/`, one set per table.

* `{dataset}_{scenario}[_memory0]_curves.png`: average accuracy on the tasks seen so
  far, mean over seeds with a band of one std (joint training, trained once on every
  task, as a horizontal reference line); one figure per table (`bench.tables`);
* `..._{strategy}_matrix.png`: the accuracy matrix (after task i, on task j);
* `..._{strategy}_learning.png`: training loss and accuracy per epoch, from
  records that kept them;
* `..._ib_active.png`: for the IB sparse method, the active channels of each hidden
  layer after each task (as a multiple of the layer's initial width: a layer that grows
  passes 1) beside its accuracy curve;
* `{dataset}_{scenario}[_memory0]_cost.png`: final accuracy (mean, bars of one std over
  seeds) against parameters at the end and against CPU seconds per cell (both log scale),
  one point per row of the table.

Failed records are left out; a curve whose cell lost seeds says so in its legend.
matplotlib is imported inside the functions that draw, so importing this is cheap.
"""
from __future__ import annotations

import io
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.files import atomic_write, safe_name
from bench.records import is_number
from bench.summary import DDOF, KEY, config_labels, natural_key, records_or_load, strategy_rank


def acc_matrix(record: dict) -> np.ndarray:
    """The record's accuracy matrix in % (rows: after task i), NaN where not evaluated."""
    rows = record["acc_matrix"]
    out = np.full((len(rows), max(len(rows), max(len(r) for r in rows))), np.nan)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if v is not None:
                out[i, j] = 100.0 * v
    return out


def average_accuracy_curve(matrix: np.ndarray) -> np.ndarray:
    """Mean accuracy over the tasks seen so far, after each task (row i, columns j <= i)."""
    return np.array([_nanmean(matrix[i, : i + 1]) for i in range(matrix.shape[0])])


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    # An all-NaN slice (e.g. a cell evaluated nowhere) is a legitimate NaN, not a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _nanstd(values: np.ndarray, axis: int = 0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(values, axis=axis, ddof=DDOF)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack arrays of possibly different shapes, padding with NaN."""
    shape = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
    out = np.full((len(arrays),) + shape, np.nan)
    for k, a in enumerate(arrays):
        out[(k,) + tuple(slice(0, s) for s in a.shape)] = a
    return out


def learning_curves(record: dict) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    """(loss, accuracy in %, epochs per training call) over every epoch of the cell; None without
    `train_curves` (records written before they were kept)."""
    curves = record.get("train_curves")
    if not isinstance(curves, list) or not curves or not all(isinstance(c, dict) for c in curves):
        return None
    loss = [v for c in curves for v in c.get("loss") or []]
    acc = [v for c in curves for v in c.get("acc") or []]
    if not loss or len(loss) != len(acc) or not all(is_number(v) for v in loss + acc):
        return None
    return np.array(loss, dtype=float), 100.0 * np.array(acc, dtype=float), \
        [len(c.get("loss") or []) for c in curves]


def active_fractions(record: dict) -> np.ndarray | None:
    """Per task (rows) and hidden layer (columns), active units / the layer's width at the first
    task; None without `per_task`. A grown layer is always nearly full, so its current width would
    hide the growth."""
    per_task = record.get("per_task")
    if not isinstance(per_task, list):
        return None
    # Optional, method-written data: tolerate malformed entries rather than fail the report.
    tasks = [t if isinstance(t, dict) else {} for t in per_task]
    layers = max((len(t.get("active") or []) for t in tasks), default=0)
    if layers == 0:
        return None
    out = np.full((len(tasks), layers), np.nan)
    initial = tasks[0].get("widths") or []
    for i, task in enumerate(tasks):
        for l, (a, w) in enumerate(zip(task.get("active") or [], initial)):
            if is_number(a) and is_number(w) and w > 0:
                out[i, l] = a / w
    return out


def _cells(records: Sequence[dict], labels: dict[tuple, str]) -> dict[tuple, list[dict]]:
    """Group records by (dataset, scenario, strategy, hash), in table row order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        cfg = rec["config"]
        groups[tuple(cfg[k] for k in KEY)].append(rec)
    return dict(sorted(groups.items(), key=lambda kv: (
        kv[0][0], kv[0][1], strategy_rank(kv[0][2]), natural_key(labels[kv[0]]))))


def write_plots(results_dir: str | os.PathLike,
                records: Sequence[dict] | None = None) -> list[Path]:
    """Write curves, accuracy-matrix heatmaps and IB active-fraction figures under `<results>/plots/`.

    Failed records are left out; a curve whose cell lost seeds says so in its legend.
    """
    import matplotlib
    matplotlib.use("Agg")  # headless: runs on cluster nodes without a display

    all_records = records_or_load(results_dir, records)
    labels = config_labels(all_records)
    cells = _cells(all_records, labels)
    out = Path(results_dir) / "plots"
    paths: list[Path] = []
    by_table: dict[tuple, list[tuple]] = defaultdict(list)
    for key in cells:
        by_table[key[:2]].append(key)
    for (dataset, scenario), keys in by_table.items():
        stem = f"{safe_name(dataset)}_{safe_name(scenario)}"
        series = [_cell_series(cells[k], labels[k]) for k in keys]
        series = [(k, s) for k, s in zip(keys, series) if s is not None]
        if not series:
            continue
        for suffix, part in _by_budget(series, cells):
            paths.append(_plot_curves(out / f"{stem}{suffix}_curves.png", dataset, scenario, part))
            paths.append(_plot_cost(out / f"{stem}{suffix}_cost.png", dataset, scenario, part))
        for key, s in series:
            cell = _cell_stem(key, keys)
            paths.append(_plot_matrix(out / f"{stem}_{cell}_matrix.png", dataset, scenario, s))
            if s["active"] is not None:
                paths.append(_plot_active(out / f"{stem}_{cell}_active.png", dataset, scenario, s))
            if s["learning"] is not None:
                paths.append(_plot_learning(out / f"{stem}_{cell}_learning.png", dataset, scenario, s))
    return paths


def _by_budget(series: list[tuple], cells: dict[tuple, list[dict]]) -> list[tuple[str, list[dict]]]:
    """The curves of each table, split as `bench.tables.split_by_budget` splits its rows."""
    import pandas as pd

    from bench.tables import split_by_budget

    by_key = dict(series)
    frame = pd.DataFrame({"key": list(by_key), "strategy": [k[2] for k in by_key],
                          "memory": [cells[k][0]["config"].get("memory") or 0 for k in by_key]})
    return [(suffix, [by_key[k] for k in part["key"]]) for suffix, part in split_by_budget(frame)]


def _cell_stem(key: tuple, keys: list[tuple]) -> str:
    """Strategy name, plus the config hash when the strategy has several configs here."""
    siblings = [k for k in keys if k[2] == key[2]]
    name = safe_name(key[2])
    return name if len(siblings) == 1 else f"{name}_{safe_name(key[3])}"


def _cell_series(records: list[dict], label: str) -> dict | None:
    """Seed statistics of one cell's ok records; None when no seed succeeded."""
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return None
    failed = len(records) - len(ok)
    matrices = _stack([acc_matrix(r) for r in ok])
    curves = _stack([average_accuracy_curve(acc_matrix(r)) for r in ok])
    actives = [a for a in (active_fractions(r) for r in ok) if a is not None]
    stacked = _stack(actives) if actives else None
    learning = [c for c in (learning_curves(r) for r in ok) if c is not None]
    finals = _nanmean(matrices[:, -1, :], axis=1)  # per seed: mean accuracy over all tasks at the end
    params = [float(r["params"]) for r in ok if is_number(r.get("params"))]
    cpu = [float(r["cpu_s"]) for r in ok if is_number(r.get("cpu_s"))]
    return {
        "label": label + (f" ({failed}/{len(records)} seeds failed)" if failed else ""),
        "params": float(np.mean(params)) if params else None,  # at the end of the stream
        "cpu": float(np.mean(cpu)) if cpu else None,
        "n": len(ok),
        "matrix": _nanmean(matrices, axis=0),
        "curve": _nanmean(curves, axis=0),
        "curve_std": _nanstd(curves) if len(ok) > 1 else None,
        "final": float(_nanmean(finals)),
        "final_std": float(_nanstd(finals)) if len(ok) > 1 else None,
        "active": _nanmean(stacked, axis=0) if stacked is not None else None,
        "active_std": _nanstd(stacked) if stacked is not None and len(actives) > 1 else None,
        # mean over the seeds that kept curves; epochs per task are a setting, the same for each seed
        "learning": (_nanmean(_stack([c[0] for c in learning]), axis=0),
                     _nanmean(_stack([c[1] for c in learning]), axis=0), learning[0][2]) if learning else None,
    }


def _draw_line(ax, values: np.ndarray, std: np.ndarray | None, label: str) -> None:
    """One series over tasks, with a shaded band of one std when there are several seeds."""
    x = np.arange(1, len(values) + 1)
    (line,) = ax.plot(x, values, marker="o", label=label)
    if std is not None:
        ax.fill_between(x, values - std, values + std, color=line.get_color(), alpha=0.2, linewidth=0)


def _task_axis(ax, n_tasks: int, ylabel: str, top: float) -> None:
    ax.set_xlabel("Tasks trained")
    ax.set_ylabel(ylabel)
    if n_tasks <= 20:
        ax.set_xticks(np.arange(1, n_tasks + 1))
    else:  # one tick per task would overlap
        ax.set_xticks([1, *range(5, n_tasks + 1, 5)])
    ax.set_ylim(0, top)
    ax.grid(alpha=0.3)


def _draw_curve(ax, s: dict) -> None:
    _draw_line(ax, s["curve"], s["curve_std"], s["label"])
    _task_axis(ax, len(s["curve"]), "Average accuracy on seen tasks (%)", 100)


def _draw_reference(ax, s: dict) -> None:
    """A cell trained once on every task (joint): its accuracy as a horizontal line across all tasks."""
    value, std = s["final"], s["final_std"]
    line = ax.axhline(value, linestyle="--", color="black", label=f"{s['label']} (all tasks at once)")
    if std is not None:
        ax.axhspan(value - std, value + std, color=line.get_color(), alpha=0.1, linewidth=0)


def _plot_curves(path: Path, dataset: str, scenario: str, series: list[dict]) -> Path:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        n_tasks = max(s["matrix"].shape[1] for s in series)
        for s in series:
            if len(s["curve"]) == 1 and n_tasks > 1:
                _draw_reference(ax, s)
            else:
                _draw_line(ax, s["curve"], s["curve_std"], s["label"])
        _task_axis(ax, n_tasks, "Average accuracy on seen tasks (%)", 100)
        ax.set_title(f"{dataset} / {scenario}: mean over seeds (shaded: ± std)")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))  # beside: labels are long
        return save_png(fig, path)
    finally:
        plt.close(fig)


def _plot_cost(path: Path, dataset: str, scenario: str, series: list[dict]) -> Path:
    """Final accuracy against parameters and against CPU time: one labelled point per row."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    try:
        # clustered points would hide each other's labels: a colour and a marker per row, one legend
        colours, markers = plt.get_cmap("tab20").colors, "osD^vP*Xh<>p"
        for ax, field, xlabel in ((axes[0], "params", "Parameters at the end"),
                                  (axes[1], "cpu", "CPU seconds per cell")):
            for i, s in enumerate(series):
                if s[field] is not None:
                    ax.errorbar(s[field], s["final"], yerr=s["final_std"], fmt=markers[i % len(markers)],
                                color=colours[i % len(colours)], capsize=3, label=s["label"])
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3, which="both")
        axes[1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
        axes[0].set_ylabel("Final average accuracy (%)")
        axes[0].set_ylim(0, 100)
        fig.suptitle(f"{dataset} / {scenario}: accuracy against cost (mean over seeds, bars ± std)")
        return save_png(fig, path)
    finally:
        plt.close(fig)


def _plot_matrix(path: Path, dataset: str, scenario: str, s: dict) -> Path:
    import matplotlib.pyplot as plt
    matrix = s["matrix"]
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    try:
        image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0, vmax=100, cmap="viridis")
        fig.colorbar(image, ax=ax, label="Accuracy (%)")
        rows, cols = matrix.shape
        if max(rows, cols) <= 10:  # beyond that the digits overlap
            _annotate(ax, matrix)
        ax.set_xticks(range(cols), [str(j + 1) for j in range(cols)])
        ax.set_yticks(range(rows), [str(i + 1) for i in range(rows)])
        ax.set_xlabel("Evaluated on task")
        ax.set_ylabel("After training task")
        ax.set_title(f"{dataset} / {scenario} / {s['label']}\n(mean over {s['n']} seed(s))",
                     fontsize="medium")
        return save_png(fig, path)
    finally:
        plt.close(fig)


def _annotate(ax, matrix: np.ndarray) -> None:
    for (i, j), v in np.ndenumerate(matrix):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize="small",
                    color="black" if v > 60 else "white")


def _plot_active(path: Path, dataset: str, scenario: str, s: dict) -> Path:
    """The IB "network state" figure: accuracy curve beside the active fraction per layer."""
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    try:
        _draw_curve(left, s)
        left.set_title("Average accuracy")
        active, std = s["active"], s["active_std"]
        for l in range(active.shape[1]):
            _draw_line(right, active[:, l], None if std is None else std[:, l], f"Layer {l + 1}")
        top = max(1.05, float(np.nanmax(active)) * 1.05)
        _task_axis(right, active.shape[0], "Active channels / initial width", top)
        right.axhline(1.0, linestyle=":", color="grey", linewidth=0.8)
        right.legend(fontsize="small")
        right.set_title("Active channels per hidden layer")
        fig.suptitle(f"{dataset} / {scenario} / {s['label']} (mean over seeds)")
        fig.tight_layout()
        return save_png(fig, path)
    finally:
        plt.close(fig)


def _plot_learning(path: Path, dataset: str, scenario: str, s: dict) -> Path:
    """Training loss and accuracy per epoch, tasks one after another (dotted lines: task boundaries)."""
    import matplotlib.pyplot as plt
    loss, acc, epochs = s["learning"]
    x = np.arange(1, len(loss) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    try:
        for ax, values, ylabel in ((left, loss, "Training loss"), (right, acc, "Training accuracy (%)")):
            ax.plot(x, values, marker="o" if len(x) <= 50 else None, markersize=3)
            for boundary in np.cumsum(epochs)[:-1]:
                ax.axvline(boundary + 0.5, linestyle=":", color="grey", linewidth=0.8)
            ax.set_xlabel("Epoch (all tasks in order)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        right.set_ylim(0, 100)
        fig.suptitle(f"{dataset} / {scenario} / {s['label']}: learning curves (mean over seeds)")
        fig.tight_layout()
        return save_png(fig, path)
    finally:
        plt.close(fig)


def save_png(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return atomic_write(path, buffer.getvalue())
