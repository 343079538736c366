"""Tables from the summary frame: Markdown, CSV and LaTeX under `<results>/tables/`.

One table per (dataset, scenario), split in two when strategies were also run
without a memory beside their runs with one. Each Markdown table is framed by
its caption (`bench.captions`) above, and below it the significance line
(`bench.significance`), IB's network (`bench.ib_network`) and the reference's figures for the
setting. pandas
writes the formats: `DataFrame.to_markdown` (tabulate) and `Styler.to_latex`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.captions import budget, reference_note, table_caption
from bench.controls import control_lines
from bench.files import atomic_write, safe_name
from bench.ib_network import ib_network_line
from bench.pairwise import pairwise_block
from bench.readme import bench_tables
from bench.records import METRICS, is_number
from bench.significance import significance_line
from bench.summary import marks, missing, records_or_load, seed_frame, seeds_of, summary_frame

PCT_COLUMNS = {"final_acc": "Final acc (%)", "avg_inc_acc": "Avg inc. acc (%)",
               "forgetting": "Forgetting (%)", "bwt": "BWT (%)"}
MISSING = "–"


def format_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Turn summary rows into display strings with the benchmark's table columns.

    Adds Dataset/Scenario columns only when the rows span several of them.
    """
    unit, scale = state_unit(summary)
    cells = [_display_row(row, unit, scale) for _, row in summary.iterrows()]
    for cell, mark in zip(cells, footnote_marks(summary)):
        cell[0] += mark
    columns = (["Strategy"] + list(PCT_COLUMNS.values())
               + ["Time (s)", "Params", f"Extra state ({unit})", "Memory (exemplars)", "Held (max)", "Seeds"])
    table = pd.DataFrame(cells, columns=columns)
    if len(summary) and summary[["dataset", "scenario"]].drop_duplicates().shape[0] > 1:
        table.insert(0, "Scenario", list(summary["scenario"]))
        table.insert(0, "Dataset", list(summary["dataset"]))
    return table


_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def footnote_marks(summary: pd.DataFrame) -> list[str]:
    """¹, ², ... for the rows whose own settings are footnoted (`summary.settings_note`), '' for the others."""
    notes = list(summary["settings"]) if "settings" in summary.columns else [""] * len(summary)
    marks_, n = [], 0
    for note in notes:
        if missing(note) or not note:
            marks_.append("")
            continue
        n += 1
        marks_.append(str(n).translate(_SUPERSCRIPT))
    return marks_


def settings_footnotes(summary: pd.DataFrame) -> str:
    """The footnotes of `footnote_marks`, one line each: a row's settings that were tuned or are not
    its strategy's default, and which were tuned (by `bench tune`, on held-out training data)."""
    notes = list(summary["settings"]) if "settings" in summary.columns else [""] * len(summary)
    lines = [f"{mark} {label}: {note}" for mark, label, note in zip(footnote_marks(summary), summary["label"], notes)
             if mark]
    return "\n\n".join(lines)


def state_unit(summary: pd.DataFrame) -> tuple[str, float]:
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
    return [f"{row['label']}{marks(row)}"] + measured + [_count(row["memory"]), _count(row.get("held_max")),
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


def _count(value: Any) -> str:
    if missing(value):
        return MISSING
    return f"{value:.0f}" if is_number(value) else str(value)


def _cell(value: Any) -> str:
    """A display string; tabulate does not escape the pipe, which would split the cell."""
    return "" if missing(value) else str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (names left, numbers right), readable rendered and raw in a terminal.

    A `summary_frame` result is formatted with `format_table` first; any other
    frame is printed as it is (NaN as empty).
    """
    if "final_acc_mean" in frame.columns:
        frame = format_table(frame)
    shown = frame.astype(object).map(_cell)
    shown.columns = [_cell(c) for c in frame.columns]
    align = ["left"] + ["right"] * (len(frame.columns) - 1)
    # disable_numparse: the cells are final strings ("1,000", "-0.00"); tabulate must not reformat them
    return shown.to_markdown(index=False, tablefmt="pipe", disable_numparse=True, colalign=align) + "\n"


TERMINAL_COLUMNS = ["Strategy", "Final acc (%)", "Avg inc. acc (%)", "Forgetting (%)", "Time (s)",
                    "Memory (exemplars)", "Seeds"]


def terminal_table(summary: pd.DataFrame) -> str:
    """What `bench run` prints: the main columns of `format_table` (fits 120 columns), then the
    rows' settings footnotes; the full table is the Markdown file under `<results>/tables/`."""
    table = format_table(summary)
    shown = table[[c for c in table.columns if c in ("Dataset", "Scenario") or c in TERMINAL_COLUMNS]]
    shown = shown.rename(columns={"Memory (exemplars)": "Memory"})
    notes = settings_footnotes(summary).replace("\n\n", "\n")
    return markdown_table(shown) + (f"\n{notes}\n" if notes else "")


_LATEX_SYMBOLS = {"±": r"$\pm$", "–": "--", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "*": r"$^*$",
                  **{sup: f"$^{{{digit}}}$" for digit, sup in enumerate("⁰¹²³⁴⁵⁶⁷⁸⁹")}}


def _latex_symbols(text: str) -> str:
    """Runs after pandas' LaTeX escaping: symbols that need math mode or a ligature."""
    return "".join(_LATEX_SYMBOLS.get(ch, ch) for ch in str(text))


def latex_table(table: pd.DataFrame, caption: str = "") -> str:
    """A bare booktabs `tabular` (to `\\input` into any table environment); caption as a comment."""
    styler = table.astype(object).map(lambda v: "" if missing(v) else str(v)).style.hide(axis="index")
    styler = styler.format(_latex_symbols, escape="latex").format_index(_latex_symbols, escape="latex", axis=1)
    body = styler.to_latex(column_format="l" + "r" * (len(table.columns) - 1), hrules=True)
    head = "".join(f"% {line}\n" for line in caption.splitlines()) if caption else ""
    return head + body


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


def table_document(rows: pd.DataFrame, seeds: pd.DataFrame, dataset: str, scenario: str,
                   records: Sequence[dict] = ()) -> tuple[str, str]:
    """(caption, notes) of one table: the paragraph above it and the lines below it."""
    caption = table_caption(rows, seeds, dataset, scenario, state_unit(rows)[0])
    notes = [significance_line(rows, seeds), *control_lines(rows, seeds, records),
             ib_network_line(records, rows), reference_note(dataset, scenario, budget(rows))]
    return caption, "\n\n".join(n for n in notes if n)


def write_tables(results_dir: str | os.PathLike,
                 records: Sequence[dict] | None = None) -> list[Path]:
    """Write `{dataset}_{scenario}[_memory0].md/.csv/.tex` under `<results>/tables/`; return the paths.

    A table written earlier whose records are all gone is removed, so the folder stays exactly what
    the records give; other scripts' tables there are kept. `records` may be passed to avoid reading
    (and warning about) the runs twice.
    """
    out = Path(results_dir) / "tables"
    records = records_or_load(results_dir, records)
    summary, seeds = summary_frame(records), seed_frame(records)
    paths: list[Path] = []
    for (dataset, scenario), part in summary.groupby(["dataset", "scenario"], sort=True):
        stem = f"{safe_name(dataset)}_{safe_name(scenario)}"
        for suffix, rows in split_by_budget(part):
            caption, notes = table_document(rows, seeds_of(seeds, rows), dataset, scenario, records)
            table = format_table(rows)
            notes = "\n\n".join(n for n in (settings_footnotes(rows), notes) if n)
            markdown = f"{caption}\n\n{markdown_table(table)}" + (f"\n{notes}\n" if notes else "")
            pairs = pairwise_block(rows, seeds_of(seeds, rows))  # the Markdown page only: too long for a caption
            markdown += f"\n{pairs}\n" if pairs else ""
            paths.append(atomic_write(out / f"{stem}{suffix}.md", markdown))
            # 10 significant digits: exact enough, without float noise like 0.8500000000000001.
            csv_text = csv_frame(rows).to_csv(index=False, float_format="%.10g")
            paths.append(atomic_write(out / f"{stem}{suffix}.csv", csv_text))
            paths.append(atomic_write(out / f"{stem}{suffix}.tex",
                                      latex_table(table, f"{caption}\n{notes}".strip())))
    written = {path.stem for path in paths}
    for stale in set(bench_tables(out)) - written:
        for ext in ("md", "csv", "tex"):
            (out / f"{stale}.{ext}").unlink(missing_ok=True)
    return paths
