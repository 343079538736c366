"""Tables and plots rebuilt from stored run records, without any training.

Every benchmark cell (dataset, scenario, strategy, config, seed) leaves one JSON
record under `<results>/runs/`. This module reads those records back and turns
them into

* `<results>/tables/{dataset}_{scenario}.{md,csv,tex}`: one row per strategy
  configuration, numbers as mean ± std over seeds (sample std, ddof=1);
* `<results>/plots/*.png`: average-accuracy curves (joint training, trained once
  on every task, as a horizontal reference line), accuracy-matrix heatmaps,
  learning curves (training loss and accuracy per epoch, from records that have
  them) and, for the IB sparse method, the active fraction of each hidden layer.

A cell with any failed seed is reported as `failed (k/n)`, never as numbers:
averaging only the seeds that survived would silently bias the comparison.

It deliberately imports neither torch nor avalanche (reports must be cheap to
rebuild), and matplotlib only inside the plotting code.

Usage: `python -m bench.report RESULTS_DIR` writes tables and plots and prints
the tables to the terminal.
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import re
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from bench.records import METRICS, REQUIRED_CONFIG, is_number as _is_number, validate_record  # noqa: F401  (the one rule)

COSTS = ("time_s", "peak_rss_mb", "params", "extra_state_bytes")
STRATEGY_ORDER = ("naive", "joint", "replay", "ewc", "lwf", "icarl", "pnn", "ib")
KEY = ["dataset", "scenario", "strategy", "hash"]
DDOF = 1  # sample std: with a handful of seeds the population std understates spread

# Config keys that never distinguish two configurations of one strategy.
_LABEL_IGNORE = {"seed", "hash"}


# --------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------

def load_records(results_dir: str | os.PathLike) -> tuple[list[dict], list[tuple[str, str]]]:
    """Read `<results_dir>/runs/**/*.json`; return (valid records, skipped (path, reason)).

    Invalid files are reported on stderr and left out, so one truncated write
    from a crashed worker cannot take the whole report down.
    """
    runs = Path(results_dir) / "runs"
    records: list[dict] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(runs.glob("**/*.json")):
        record, reason = _read_record(path)
        if reason is not None:
            print(f"warning: skipping {path}: {reason}", file=sys.stderr)
            skipped.append((str(path), reason))
        else:
            records.append(record)
    _warn_duplicates(records)
    return records, skipped


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    """Parse and validate one file; the second item is the reason it is unusable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable: {exc}"
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc}"
    reason = validate_record(record)
    return (None, reason) if reason else (record, None)


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA (which a nullable integer column yields)."""
    return value is None or (not isinstance(value, (list, tuple, dict)) and bool(pd.isna(value)))


def _warn_duplicates(records: list[dict]) -> None:
    """Two records for one (config, seed) would count that seed twice; say so."""
    seen: dict[tuple, int] = defaultdict(int)
    for rec in records:
        cfg = rec["config"]
        seen[(cfg["dataset"], cfg["scenario"], cfg["strategy"], cfg["hash"], cfg["seed"])] += 1
    for key, count in seen.items():
        if count > 1:
            print(f"warning: {count} records for {'/'.join(map(str, key))}; "
                  "each is counted as a seed", file=sys.stderr)


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------

def summary_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per (dataset, scenario, strategy, config hash), in table order.

    Columns: the key, `label` (strategy plus what distinguishes its config from
    its siblings), memory, epochs, n_seeds, n_failed, and `<m>_mean` / `<m>_std`
    over the ok seeds for every metric (fractions, as stored) and cost.
    `std` uses ddof=1, so it is NaN with a single ok seed.
    """
    stat_cols = [f"{m}_{s}" for m in METRICS + COSTS for s in ("mean", "std")]
    columns = KEY + ["label", "memory", "held_max", "epochs", "n_seeds", "n_failed", "n_old_code",
                     "n_dirty"] + stat_cols
    if not records:
        return pd.DataFrame(columns=columns)
    flat = pd.DataFrame([_flat_row(r) for r in records])
    labels = config_labels(records)
    rows = [_summary_row(key, group, labels[key]) for key, group in flat.groupby(KEY, sort=False)]
    frame = pd.DataFrame(rows, columns=columns)
    for col in ("memory", "held_max", "epochs"):
        frame[col] = _as_int_if_integral(frame[col])
    return _sort_rows(frame).reset_index(drop=True)


OLD_CODE_MARK, DIRTY_MARK = "†", "*"


def current_code(strategy: str) -> str | None:
    """The fingerprint of the code a cell of `strategy` would run now (None: no such strategy here)."""
    return _current_codes().get(strategy)


@functools.lru_cache(maxsize=1)
def _current_codes() -> dict[str, str]:
    from bench import registry
    from bench.provenance import code_fingerprint

    return {name: code_fingerprint(info.module.__name__) for name, info in registry.strategies().items()}


def _marks(row: pd.Series) -> str:
    return (OLD_CODE_MARK if row.get("n_old_code", 0) else "") + (DIRTY_MARK if row.get("n_dirty", 0) else "")


def _as_int_if_integral(column: pd.Series) -> pd.Series:
    """Keep `200` from printing as `200.0` when a missing value forced floats."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().sum() != column.notna().sum():
        return column  # non-numeric settings stay as they are
    if (numbers.dropna() % 1 == 0).all():
        return numbers.astype("Int64")
    return numbers


def _flat_row(record: dict) -> dict:
    """The per-seed numbers of one record; failed records keep only their key."""
    cfg = record["config"]
    row = {k: cfg[k] for k in KEY}
    row.update(seed=cfg["seed"], ok=record["status"] == "ok",
               memory=cfg.get("memory"), epochs=cfg.get("epochs"),
               # marks concern the numbers shown, so only ok seeds count
               old_code=record["status"] == "ok" and record.get("code") != current_code(cfg["strategy"]),
               dirty=record["status"] == "ok" and record.get("git_dirty") is True)
    held = record.get("exemplars_held")
    row["held"] = max(held) if isinstance(held, list) and held and all(map(_is_number, held)) else None
    metrics = record.get("metrics") or {}
    for m in METRICS:
        row[m] = metrics.get(m) if row["ok"] else None
    for c in COSTS:
        value = record.get(c)
        row[c] = value if row["ok"] and _is_number(value) else None
    return row


def _summary_row(key: tuple, group: pd.DataFrame, label: str) -> dict:
    ok = group[group["ok"]]
    row = dict(zip(KEY, key))
    held = pd.to_numeric(group["held"], errors="coerce").dropna()
    row.update(label=label, memory=group["memory"].iloc[0], held_max=held.max() if len(held) else None,
               epochs=group["epochs"].iloc[0], n_seeds=len(group), n_failed=int((~group["ok"]).sum()),
               n_old_code=int(group["old_code"].sum()), n_dirty=int(group["dirty"].sum()))
    for col in METRICS + COSTS:
        values = pd.to_numeric(ok[col], errors="coerce").dropna()
        row[f"{col}_mean"] = values.mean() if len(values) else np.nan
        row[f"{col}_std"] = values.std(ddof=DDOF) if len(values) > DDOF else np.nan
    return row


def strategy_rank(strategy: str) -> tuple[int, str]:
    """Sort key: the fixed benchmark order first, then any others alphabetically."""
    name = strategy.lower()
    if name in STRATEGY_ORDER:
        return STRATEGY_ORDER.index(name), name
    return len(STRATEGY_ORDER), name


def _sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    order = sorted(range(len(frame)), key=lambda i: (
        frame["dataset"].iat[i], frame["scenario"].iat[i],
        strategy_rank(frame["strategy"].iat[i]), natural_key(frame["label"].iat[i])))
    return frame.iloc[order]


def natural_key(text: str) -> list:
    """Sort `epochs 5` before `epochs 10`: digit runs compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(text)) if t]


def config_labels(records: Iterable[dict]) -> dict[tuple, str]:
    """Map each (dataset, scenario, strategy, hash) to a row label.

    A strategy with one config is labelled by its name alone; with several,
    each label names the config values that differ, e.g. `ewc (memory 0)`.
    """
    configs: dict[tuple, dict[tuple, dict]] = defaultdict(dict)
    names: dict[tuple, str] = {}
    for rec in records:
        cfg = rec["config"]
        configs[(cfg["dataset"], cfg["scenario"], cfg["strategy"])].setdefault(
            cfg["hash"], _flatten(cfg))
        names.setdefault((cfg["dataset"], cfg["scenario"], cfg["strategy"], cfg["hash"]), row_name(rec))
    labels = {}
    for (dataset, scenario, strategy), by_hash in configs.items():
        shown = {h: names[(dataset, scenario, strategy, h)] for h in by_hash}
        for h, text in _distinguish(shown, by_hash).items():
            labels[(dataset, scenario, strategy, h)] = text
    return labels


def row_name(record: dict) -> str:
    """The strategy's name, as `<name> + replay` when it also trained with the matched buffer."""
    cfg = record["config"]
    shared = record.get("shared_replay")
    if shared is None:  # records from before the field: the strategy's declared memory kind decides
        from bench import registry

        info = registry.strategies().get(cfg["strategy"])
        shared = info is not None and info.memory == "shared" and _is_number(cfg.get("memory")) \
            and cfg["memory"] > 0 and cfg["strategy"] != "replay"
    return f"{cfg['strategy']} + replay" if shared else cfg["strategy"]


def _distinguish(shown: dict[str, str], by_hash: dict[str, dict]) -> dict[str, str]:
    if len(by_hash) == 1:
        return dict(shown)
    keys = sorted({k for cfg in by_hash.values() for k in cfg} - _LABEL_IGNORE)
    differing = [k for k in keys if len({_show(cfg.get(k)) for cfg in by_hash.values()}) > 1]
    parts = {h: [f"{k} {_show(cfg.get(k))}" for k in differing] for h, cfg in by_hash.items()}
    counts = defaultdict(int)
    for p in parts.values():
        counts[tuple(p)] += 1
    labels = {}
    for h, p in parts.items():
        # Configs can hash differently for reasons not visible in `config`
        # (e.g. a code-version salt); the hash itself still tells such rows apart.
        if counts[tuple(p)] > 1:
            p = p + [f"hash {h}"]
        labels[h] = f"{shown[h]} ({', '.join(p)})"
    return labels


def _flatten(cfg: dict, prefix: str = "") -> dict:
    """Nested config sections become dotted keys, so they can be compared one by one."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return json.dumps(value)
    return str(value)


# --------------------------------------------------------------------------
# Table formatting
# --------------------------------------------------------------------------

_PCT_COLUMNS = {"final_acc": "Final acc (%)", "avg_inc_acc": "Avg inc. acc (%)",
                "forgetting": "Forgetting (%)", "bwt": "BWT (%)"}
MISSING = "–"


def format_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Turn summary rows into display strings with the benchmark's table columns.

    Adds Dataset/Scenario columns only when the rows span several of them.
    """
    unit, scale = _state_unit(summary)
    cells = [_display_row(row, unit, scale) for _, row in summary.iterrows()]
    columns = (["Strategy"] + list(_PCT_COLUMNS.values())
               + ["Time (s)", "Params", f"Extra state ({unit})", "Memory (exemplars)", "Held (max)", "Seeds"])
    table = pd.DataFrame(cells, columns=columns)
    if len(summary) and summary[["dataset", "scenario"]].drop_duplicates().shape[0] > 1:
        table.insert(0, "Scenario", list(summary["scenario"]))
        table.insert(0, "Dataset", list(summary["dataset"]))
    return table


def _state_unit(summary: pd.DataFrame) -> tuple[str, float]:
    """One unit per table so that rows compare at a glance (decimal: 1 MB = 10^6 bytes)."""
    biggest = pd.to_numeric(summary.get("extra_state_bytes_mean"), errors="coerce").max() \
        if len(summary) else np.nan
    return ("MB", 1e6) if pd.notna(biggest) and biggest >= 1e6 else ("KB", 1e3)


def _display_row(row: pd.Series, unit: str, scale: float) -> list[str]:
    n, k = int(row["n_seeds"]), int(row["n_failed"])
    measured: list[str]
    if k:
        measured = [f"failed ({k}/{n})"] * 7
    else:
        measured = [_pm(row, m, 100.0, 2) for m in METRICS]
        measured += [_pm(row, "time_s", 1.0, 1), _pm(row, "params", 1.0, 0, sep=True, hide_zero=True),
                     _pm(row, "extra_state_bytes", 1.0 / scale, 2 if unit == "MB" else 1)]
    # the most exemplars stored after any task of any seed; – for strategies that store none
    return [f"{row['label']}{_marks(row)}"] + measured + [_memory(row["memory"]), _memory(row.get("held_max")),
                                                           str(n)]


def _pm(row: pd.Series, col: str, factor: float, digits: int,
        sep: bool = False, hide_zero: bool = False) -> str:
    """`mean ± std`; just the mean when the std is undefined (one seed)."""
    mean, std = row[f"{col}_mean"], row[f"{col}_std"]
    if pd.isna(mean):
        return MISSING
    fmt = f"{{:{',' if sep else ''}.{digits}f}}"
    text = fmt.format(mean * factor)
    if pd.isna(std) or (hide_zero and std == 0):
        return text
    return f"{text} ± {fmt.format(std * factor)}"


def _memory(value: Any) -> str:
    if _missing(value):
        return MISSING
    return f"{value:.0f}" if _is_number(value) else str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A padded pipe table, readable both rendered and raw in a terminal.

    A `summary_frame` result is formatted with `format_table` first; any other
    frame is printed cell by cell (NaN as empty).
    """
    if "final_acc_mean" in frame.columns:
        frame = format_table(frame)
    header = [str(c) for c in frame.columns]
    body = [[_md_cell(v) for v in row] for row in frame.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    right = [i > 0 for i in range(len(header))]  # numbers right-aligned, names left
    lines = [_md_line(header, widths, right),
             "| " + " | ".join(("-" * (w - 1) + ":") if r else "-" * w
                               for w, r in zip(widths, right)) + " |"]
    lines += [_md_line(r, widths, right) for r in body]
    return "\n".join(lines) + "\n"


def _md_cell(value: Any) -> str:
    if _missing(value):
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_line(cells: list[str], widths: list[int], right: list[bool]) -> str:
    return "| " + " | ".join(c.rjust(w) if r else c.ljust(w)
                             for c, w, r in zip(cells, widths, right)) + " |"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", "†": r"$^\dagger$",
                  "*": r"$^*$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials character by character, so escapes are never re-escaped."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(table: pd.DataFrame, caption: str = "") -> str:
    """A bare `tabular` (to `\\input` into any table environment); caption as a comment."""
    head = [f"% {line}" for line in caption.splitlines()] if caption else []
    spec = "l" + "r" * (len(table.columns) - 1)
    lines = head + [f"\\begin{{tabular}}{{{spec}}}", "\\hline",
                    " & ".join(latex_escape(c) for c in table.columns) + r" \\", "\\hline"]
    for row in table.itertuples(index=False):
        lines.append(" & ".join(latex_escape(_md_cell(v)) for v in row) + r" \\")
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def table_caption(summary: pd.DataFrame, dataset: str, scenario: str) -> str:
    """State what the numbers are, so a table copied out of context stays honest."""
    memories = sorted({m for m in summary["memory"] if not _missing(m) and _is_number(m)})
    # strategies that store no data record 0; the budget is what the others were given
    budgets = [m for m in memories if m > 0] or memories
    budget = ", ".join(f"{m:.0f}" for m in budgets) if budgets else MISSING
    unit, _ = _state_unit(summary)
    stores = " (0 in the Memory column: the strategy stores no data)" if 0 in memories and budgets != memories else ""
    return (f"{dataset}, {scenario}. Memory budget: {budget} exemplars{stores}. "
            f"Numbers are mean ± std over seeds (sample std, ddof={DDOF}; "
            "a single seed shows the mean only); accuracies, forgetting and BWT in %. "
            f"Extra state in {unit} (1 {unit} = 10^{6 if unit == 'MB' else 3} bytes). "
            "A row with any failed seed shows failed (k/n) instead of numbers."
            + _footnotes(summary))


def _footnotes(summary: pd.DataFrame) -> str:
    notes = ""
    if len(summary) and summary.get("n_old_code", pd.Series(dtype=int)).fillna(0).astype(int).any():
        notes += (f" {OLD_CODE_MARK} Some seeds were made by older code than the current one (their code "
                  "fingerprint differs); `bench run` reruns them.")
    if len(summary) and summary.get("n_dirty", pd.Series(dtype=int)).fillna(0).astype(int).any():
        notes += (f" {DIRTY_MARK} Some seeds were made with uncommitted changes to the code that runs "
                  "in a cell (git_dirty).")
    return notes


def csv_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Machine-readable rows: separate mean/std columns (units as stored) and a status.

    Numbers of a row with a failed seed are blanked, like in the other formats.
    """
    frame = summary.copy()
    frame.insert(frame.columns.get_loc("n_failed") + 1, "status",
                 ["ok" if k == 0 else "failed" for k in frame["n_failed"]])
    stat_cols = [c for c in frame.columns if c.endswith(("_mean", "_std"))]
    frame[stat_cols] = frame[stat_cols].astype(float)
    frame.loc[frame["n_failed"] > 0, stat_cols] = np.nan
    return frame


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write via a temporary file in the same directory, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def safe_name(text: str) -> str:
    """File-name-safe form of a dataset/scenario/strategy name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "unnamed"


def _records_or_load(results_dir: str | os.PathLike, records: Sequence[dict] | None) -> list[dict]:
    return list(records) if records is not None else load_records(results_dir)[0]


def write_tables(results_dir: str | os.PathLike,
                 records: Sequence[dict] | None = None) -> list[Path]:
    """Write `{dataset}_{scenario}.md/.csv/.tex` under `<results>/tables/`; return the paths.

    `records` may be passed to avoid reading (and warning about) the runs twice.
    """
    out = Path(results_dir) / "tables"
    summary = summary_frame(_records_or_load(results_dir, records))
    paths: list[Path] = []
    for (dataset, scenario), part in summary.groupby(["dataset", "scenario"], sort=True):
        stem = f"{safe_name(dataset)}_{safe_name(scenario)}"
        for suffix, rows in split_by_budget(part):
            caption = table_caption(rows, dataset, scenario)
            table = format_table(rows)
            paths.append(atomic_write(out / f"{stem}{suffix}.md", f"{caption}\n\n{markdown_table(table)}"))
            # 10 significant digits: exact enough, without float noise like 0.8500000000000001.
            csv_text = csv_frame(rows).to_csv(index=False, float_format="%.10g")
            paths.append(atomic_write(out / f"{stem}{suffix}.csv", csv_text))
            paths.append(atomic_write(out / f"{stem}{suffix}.tex", latex_table(table, caption)))
    return paths


def split_by_budget(part: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """[("", the table)], or, when strategies were also run without a memory (`--memory 0`) beside
    their runs with one, [("", the rows with the budget), ("_memory0", the memory-free rows)].

    Strategies that never store data (naive, joint) appear in both: their runs are the same.
    """
    memory = pd.to_numeric(part["memory"], errors="coerce").fillna(0)
    buffered = set(part.loc[memory > 0, "strategy"])
    memory_free = (memory == 0) & part["strategy"].isin(buffered)
    if not memory_free.any():
        return [("", part)]
    return [("", part[~memory_free]), ("_memory0", part[memory == 0])]


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------

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
    if not loss or len(loss) != len(acc) or not all(_is_number(v) for v in loss + acc):
        return None
    return np.array(loss, dtype=float), 100.0 * np.array(acc, dtype=float), \
        [len(c.get("loss") or []) for c in curves]


def active_fractions(record: dict) -> np.ndarray | None:
    """Per task (rows) and hidden layer (columns), active units / layer width; None without `per_task`."""
    per_task = record.get("per_task")
    if not isinstance(per_task, list):
        return None
    # Optional, method-written data: tolerate malformed entries rather than fail the report.
    tasks = [t if isinstance(t, dict) else {} for t in per_task]
    layers = max((len(t.get("active") or []) for t in tasks), default=0)
    if layers == 0:
        return None
    out = np.full((len(tasks), layers), np.nan)
    for i, task in enumerate(tasks):
        for l, (a, w) in enumerate(zip(task.get("active") or [], task.get("widths") or [])):
            if _is_number(a) and _is_number(w) and w > 0:
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

    all_records = _records_or_load(results_dir, records)
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
        paths.append(_plot_curves(out / f"{stem}_curves.png", dataset, scenario, [s for _, s in series]))
        for key, s in series:
            cell = _cell_stem(key, keys)
            paths.append(_plot_matrix(out / f"{stem}_{cell}_matrix.png", dataset, scenario, s))
            if s["active"] is not None:
                paths.append(_plot_active(out / f"{stem}_{cell}_active.png", dataset, scenario, s))
            if s["learning"] is not None:
                paths.append(_plot_learning(out / f"{stem}_{cell}_learning.png", dataset, scenario, s))
    return paths


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
    return {
        "label": label + (f" ({failed}/{len(records)} seeds failed)" if failed else ""),
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
    ax.set_xticks(np.arange(1, n_tasks + 1))
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
        ax.legend(fontsize="small")
        return _save(fig, path)
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
        return _save(fig, path)
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
        _task_axis(right, active.shape[0], "Active fraction (active / width)", 1.05)
        right.legend(fontsize="small")
        right.set_title("Active units per hidden layer")
        fig.suptitle(f"{dataset} / {scenario} / {s['label']} (mean over seeds)")
        fig.tight_layout()
        return _save(fig, path)
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
        return _save(fig, path)
    finally:
        plt.close(fig)


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return atomic_write(path, buffer.getvalue())


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild tables and plots for a results directory and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    records, skipped = load_records(args.results_dir)
    if not records:
        print(f"no usable run records under {args.results_dir / 'runs'}", file=sys.stderr)
        return 1
    summary = summary_frame(records)
    for (dataset, scenario), part in summary.groupby(["dataset", "scenario"], sort=True):
        print(f"{table_caption(part, dataset, scenario)}\n\n{markdown_table(part)}")
    written = write_tables(args.results_dir, records)
    if not args.no_plots:
        written += write_plots(args.results_dir, records)
    print(f"wrote {len(written)} files; skipped {len(skipped)} invalid record(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
