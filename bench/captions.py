"""What a table's numbers are: the caption above it and the note on the reference below it.

The caption is built from the records behind the table (dataset, scenario,
memory, epochs, backbone, seeds, whether the data were the official files), so
a table copied out of context stays honest. The reference note gives the
reference's figures for the same setting (`reference_results.toml`, read from
its text) and a sentence on how the protocol here differs.
"""
from __future__ import annotations

import functools
import tomllib
from pathlib import Path

import pandas as pd

from bench.display import UNTUNED_MARK
from bench.records import is_number
from bench.summary import DDOF, DIRTY_MARK, OLD_CODE_MARK, missing

REFERENCE_FILE = Path(__file__).with_name("reference_results.toml")
DATASET_NAMES = {"mnist": "Split-MNIST", "cifar10": "Split-CIFAR-10", "cifar100": "Split-CIFAR-100",
                 "omniglot": "Omniglot"}
SCENARIO_NAMES = {"class-il": "Class-IL", "task-il": "Task-IL"}


def budget(rows: pd.DataFrame) -> list[int]:
    """The memory budget(s) of a table: what strategies that store data were given (0 if none did)."""
    memories = sorted({int(m) for m in rows["memory"] if not missing(m) and is_number(m)})
    return [m for m in memories if m > 0] or memories


def table_caption(rows: pd.DataFrame, seeds: pd.DataFrame, dataset: str, scenario: str,
                  unit: str) -> str:
    """One paragraph: the setting, then how to read the numbers, then the footnotes of the marks."""
    memories = sorted({int(m) for m in rows["memory"] if not missing(m) and is_number(m)})
    budgets = budget(rows)
    shown = ", ".join(map(str, budgets)) if budgets else "–"
    stores = (" (0 in the Memory column: the strategy stores no data)"
              if 0 in memories and budgets != memories else "")
    return (f"{_setting(seeds, dataset, scenario)} Memory budget: {shown} exemplars{stores}. "
            f"{_training(seeds)} {_data(seeds)} "
            f"Numbers are mean ± std over seeds (sample std, ddof={DDOF}; "
            "a single seed shows the mean only); accuracies, forgetting and BWT in %. "
            f"Extra state in {unit} (1 {unit} = 10^{6 if unit == 'MB' else 3} bytes). "
            "A row with any failed seed shows failed (k/n) instead of numbers." + _footnotes(rows))


def _setting(seeds: pd.DataFrame, dataset: str, scenario: str) -> str:
    tasks = pd.to_numeric(seeds.get("tasks"), errors="coerce").dropna() if len(seeds) else pd.Series()
    n_tasks = f", {int(tasks.max())} tasks" if len(tasks) else ""
    return f"{DATASET_NAMES.get(dataset, dataset)}, {SCENARIO_NAMES.get(scenario, scenario)}{n_tasks}."


def _values(column: pd.Series) -> list[str]:
    return sorted({str(v) for v in column if not missing(v)}, key=lambda v: (len(v), v))


def seed_ranges(ids) -> str:
    """0, 1, 2, 5 -> '0-2, 5'."""
    ids = sorted({int(i) for i in ids})
    parts: list[str] = []
    start = prev = None
    for i in ids + [None]:
        if start is not None and (i is None or i != prev + 1):
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if i is not None and start is None:
            start = i
        prev = i
    return ", ".join(parts)


def _training(seeds: pd.DataFrame) -> str:
    epochs, backbones = _values(seeds["epochs"]), _values(seeds["backbone"])
    plural = "" if epochs == ["1"] else "s"
    epochs_text = (f"{' or '.join(epochs)} epoch{plural} per task"
                   + (" (differing between rows)" if len(epochs) > 1 else "") if epochs else "epochs not recorded")
    backbone_text = f"backbone {' or '.join(backbones)}" if backbones else "backbone not recorded"
    per_row = seeds.groupby(["strategy", "hash"])["seed"].apply(lambda s: tuple(sorted(s)))
    uneven = " (not every row has every seed: see Seeds)" if per_row.nunique() > 1 else ""
    ids = seed_ranges(seeds["seed"])
    seeds_text = f"seed{'s' if not ids.isdigit() else ''} {ids or '–'}"
    return f"Training: {epochs_text}, {backbone_text}, {seeds_text}{uneven}."


def _data(seeds: pd.DataFrame) -> str:
    flags = list(seeds["data_official"])
    if flags and all(f is True for f in flags):
        return "Data: the official files (checksums match)."
    unofficial = sum(f is False for f in flags)
    unknown = sum(f is not True and f is not False for f in flags)
    if unknown == len(flags):
        return "Data: provenance not recorded."
    if unofficial == len(flags):
        return "Data: NOT the official files (checksums differ; records say data_official false)."
    parts = [f"{unofficial} of {len(flags)} records on data that are not the official files"] if unofficial else []
    if unknown:
        parts.append(f"{unknown} of {len(flags)} records without data provenance")
    return f"Data: {'; '.join(parts)}."


def _footnotes(rows: pd.DataFrame) -> str:
    notes = ""
    if len(rows) and rows.get("n_old_code", pd.Series(dtype=int)).fillna(0).astype(int).any():
        notes += (f" {OLD_CODE_MARK} Some seeds were made by older code than the current one (their code "
                  "fingerprint differs); `bench run` reruns those whose configuration the protocol still plans, "
                  "and `bench prune` lists the others (configurations no protocol plans any more).")
    if len(rows) and rows.get("n_dirty", pd.Series(dtype=int)).fillna(0).astype(int).any():
        notes += (f" {DIRTY_MARK} Some seeds were made with uncommitted changes to the code that runs "
                  "in a cell (git_dirty).")
    if len(rows) and rows.get("n_untuned", pd.Series(dtype=int)).fillna(0).astype(int).any():
        notes += (f" {UNTUNED_MARK} The strategy ran on its declared defaults: its protocol file has no "
                  "section for it, so its settings were not tuned for this setting.")
    return notes


@functools.lru_cache(maxsize=1)
def reference_results() -> dict:
    """`reference_results.toml`: {dataset: {scenario: {table, memory, metric, protocol, results}}}."""
    with open(REFERENCE_FILE, "rb") as f:
        return tomllib.load(f)


def reference_note(dataset: str, scenario: str, budgets: list[int]) -> str:
    """The reference's figures for this setting and how the protocol differs, or that it reports none."""
    entry = reference_results().get(dataset, {}).get(scenario)
    if entry is None or budgets != [entry["memory"]]:
        return "The reference reports no figure for this setting."
    figures = ", ".join(f"{name} {value:.1f}%" for name, value in entry["results"].items())
    return (f"Reference (its Table {entry['table']}, {entry['metric']}): {figures}. "
            f"{entry['protocol']}")
