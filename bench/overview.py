"""The front page's tables, from the same summary rows as every other table.

`headline.md`: mean final accuracy of every method (rows) in every setting the records
cover (columns: dataset, scenario and, where a table is split by budget, the memory).
`separated.md`: per setting, in words, the methods the seeds do not separate from the best
and the rank groups of the IB rows (bench/pairwise.py). `sizes.md`: per setting, the rows whose
parameter count at the end is not the backbone's, as a multiple of naive's (equal memory is not
equal size). `reference.md`: the reference's own figures (`reference_results.toml`) beside this
suite's for the same setting. All are written under `<results>/tables/` by `bench table` and
copied into README.md between `<!-- bench:table NAME -->` markers.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from bench.captions import DATASET_NAMES, budget, reference_results
from bench.files import atomic_write
from bench.pairwise import group_letter, pairs, rank_groups
from bench.significance import IB_ROWS
from bench.summary import OLD_CODE_MARK, DIRTY_MARK, marks, seeds_of, strategy_rank
from bench.tables import MISSING, markdown_table, split_by_budget

OVERVIEW_TABLES = ("headline", "separated", "sizes", "reference")
DATASET_ORDER = ("mnist", "omniglot", "cifar10", "cifar100")
_SHORT_DATASET = {"mnist": "MNIST", "omniglot": "Omni", "cifar10": "C10", "cifar100": "C100"}
_SHORT_SCENARIO = {"class-il": "CIL", "task-il": "TIL"}


def settings_columns(summary: pd.DataFrame) -> list[tuple[str, str, str, list[int], pd.DataFrame]]:
    """(column header, dataset, scenario, budgets, rows) per table `bench table` writes, in front-page order."""
    columns = []
    for (dataset, scenario), part in summary.groupby(["dataset", "scenario"], sort=False):
        pieces = split_by_budget(part)
        for suffix, rows in pieces:
            budgets = budget(rows)
            header = f"{_SHORT_DATASET.get(dataset, dataset)} {_SHORT_SCENARIO.get(scenario, scenario)}"
            if len(pieces) > 1:
                header += f" {', '.join(map(str, budgets))}"
            columns.append((header, dataset, scenario, budgets, rows))
    order = {d: i for i, d in enumerate(DATASET_ORDER)}
    columns.sort(key=lambda c: (order.get(c[1], len(order)), c[1], c[2], -max(c[3] or [0])))
    return columns


def _final(rows: pd.DataFrame) -> str:
    """One setting's cell for one method: mean ± std of final accuracy, 1 decimal, with the row's marks."""
    if rows.empty:
        return MISSING
    if len(rows) > 1:
        return f"{len(rows)} rows"
    row = rows.iloc[0]
    if row["n_failed"]:
        return f"failed ({int(row['n_failed'])}/{int(row['n_seeds'])})"
    mean, std = row["final_acc_mean"] * 100, row["final_acc_std"] * 100
    text = MISSING if pd.isna(mean) else f"{mean:.1f}" + ("" if pd.isna(std) else f" ± {std:.1f}")
    return text + marks(row)


def _and(names: list[str]) -> str:
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def headline(summary: pd.DataFrame) -> str:
    """The headline table with its caption and notes, as Markdown."""
    columns = settings_columns(summary)
    strategies = sorted(set(summary["strategy"]), key=strategy_rank)
    frame = pd.DataFrame(
        [[name] + [_final(rows[rows["strategy"] == name]) for *_, rows in columns] for name in strategies],
        columns=["Method"] + [header for header, *_ in columns])
    with_buffer = sorted({s for *_, b, rows in columns if b and b[0] > 0
                          for s, label in zip(rows["strategy"], rows["label"]) if " + replay" in label},
                         key=strategy_rank)
    names = list(dict.fromkeys(f"{_SHORT_DATASET.get(d, d)} {DATASET_NAMES.get(d, d)}" for _, d, *_ in columns))
    names = [n.split(" ", 1)[1] if n.split(" ", 1)[0] == n.split(" ", 1)[1] else n.replace(" ", " = ", 1)
             for n in names]
    caption = ("Final average accuracy (%) after the last task, mean ± sample std over seeds, of every method "
               "(rows) in every setting (columns): " + ", ".join(names) + "; CIL Class-IL, TIL Task-IL; "
               "where a column names a number, it is the memory budget in exemplars. "
               + (f"In columns with a budget, {_and(with_buffer)} train with the shared class-balanced "
                  "buffer (`+ replay` in the full tables). " if with_buffer else "")
               + f"{MISSING}: not run in that setting (the method does not apply, or needs a memory). "
               "Each column is one table of docs/results.md, with its caption (epochs, backbone, seeds, data), "
               "its rows' settings and the line on IB against the best other method.")
    if any(OLD_CODE_MARK in cell for cell in frame.to_numpy().ravel()):
        caption += f" {OLD_CODE_MARK} Some seeds were made by older code than the current one."
    if any(DIRTY_MARK in cell for cell in frame.iloc[:, 1:].to_numpy().ravel()):
        caption += f" {DIRTY_MARK} Some seeds were made with uncommitted changes."
    return f"{caption}\n\n{markdown_table(frame)}"


def separated(summary: pd.DataFrame, seeds: pd.DataFrame) -> str:
    """Per setting: the methods not separated from the best, and the IB rows' rank groups (Markdown)."""
    lines = ["What the seeds separate, per setting (headers as in the headline table): the methods that a "
             "paired t test over the seeds, Holm-corrected over the setting's pairs, does not separate from the "
             "best by mean (joint not counted), and the rank groups the IB rows sit in (a: the best's); "
             "every pair is under each table in docs/results.md.", ""]
    for header, _, _, _, rows in settings_columns(summary):
        labels, found = pairs(rows, seeds_of(seeds, rows))
        if len(labels) < 2:
            continue
        groups = rank_groups(labels, found)
        ib = [(label, [group_letter(i) for i, g in enumerate(groups) if label in g])
              for label, strategy in zip(rows["label"], rows["strategy"]) if strategy in IB_ROWS and label in labels]
        where = "; ".join(f"{label} in {', '.join(found_in)}" for label, found_in in ib)
        lines.append(f"- **{header}** ({len(labels)} methods, {sum(p.separated for p in found)} of {len(found)} "
                     f"pairs separated): not separated from the best, {', '.join(groups[0])}"
                     + (f"; {where}." if where else "."))
    return "\n".join(lines) + "\n"


def sizes(summary: pd.DataFrame) -> str:
    """Per setting: every row whose mean parameter count at the end differs from naive's, as a multiple of it."""
    lines = ["Parameters at the end of the stream as a multiple of naive's (the backbone with its heads), per "
             "setting (headers as in the headline table), for every row not at naive's size (rounded to 1.0 "
             "counts as naive's); the counts themselves are in each table of docs/results.md.", ""]
    for header, _, _, _, rows in settings_columns(summary):
        base = rows.loc[rows["strategy"] == "naive", "params_mean"]
        if base.empty or not base.iloc[0] > 0:
            continue
        ratios = [(label, value / base.iloc[0]) for label, value in zip(rows["label"], rows["params_mean"])
                  if pd.notna(value)]
        grown = [f"{label} {ratio:.1f}×" for label, ratio in ratios if round(ratio, 1) != 1.0]
        lines.append(f"- **{header}**: " + (", ".join(grown) if grown else "every row at naive's size") + ".")
    return "\n".join(lines) + "\n"


def reference(summary: pd.DataFrame) -> str:
    """The reference's figure against this suite's for each method and setting the reference reports."""
    columns = {(d, s, tuple(b)): (header, rows) for header, d, s, b, rows in settings_columns(summary)}
    order = {d: i for i, d in enumerate(DATASET_ORDER)}
    entries = sorted(((d, s, e) for d, by in reference_results().items() for s, e in by.items()),
                     key=lambda x: (order.get(x[0], len(order)), x[1]))
    methods: list[str] = []
    for _, _, entry in entries:
        methods += [m for m in entry["results"] if m not in methods]
    ours = set(summary["strategy"])  # the suite's methods first, in table order; the reference's others after
    methods.sort(key=lambda m: (m not in ours, strategy_rank(m) if m in ours else (0, "")))
    cells, headers = {}, []
    for dataset, scenario, entry in entries:
        header, rows = columns.get((dataset, scenario, (entry["memory"],)),
                                   (None, summary.iloc[0:0]))
        if header is None:
            header = f"{_SHORT_DATASET.get(dataset, dataset)} {_SHORT_SCENARIO.get(scenario, scenario)}" \
                     + (f" {entry['memory']}" if entry["memory"] else "")
        headers.append(header)
        for method, figure in entry["results"].items():
            ours = _final(rows[rows["strategy"] == method]).split(" ± ")[0]
            cells[(method, header)] = f"{figure:.1f} / {ours}"
    frame = pd.DataFrame([[m] + [cells.get((m, h), "") for h in headers] for m in methods],
                         columns=["Method"] + headers)
    caption = ("The reference's figure / this suite's mean final accuracy (%) for the same setting (headers as "
               f"in the headline table); {MISSING}: not run here (a method the suite does not have, or a setting "
               "without files on these machines); empty: the reference reports no figure. The reference states "
               "neither its networks nor its training lengths: only the settings match (docs/results.md gives "
               "each table's note).")
    return f"{caption}\n\n{markdown_table(frame)}"


def write_overview(results_dir: str | os.PathLike, summary: pd.DataFrame, seeds: pd.DataFrame) -> list[Path]:
    """`headline.md`, `separated.md`, `sizes.md` and `reference.md` under `<results>/tables/` (removed when
    there are no rows)."""
    out = Path(results_dir) / "tables"
    if summary.empty:
        for name in OVERVIEW_TABLES:
            (out / f"{name}.md").unlink(missing_ok=True)
        return []
    return [atomic_write(out / "headline.md", headline(summary)),
            atomic_write(out / "separated.md", separated(summary, seeds)),
            atomic_write(out / "sizes.md", sizes(summary)),
            atomic_write(out / "reference.md", reference(summary))]
