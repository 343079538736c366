"""Every pair of methods in a table: which differences the seeds separate, and the rank groups.

Each pair of rows (`joint`, the upper bound, left out; a row with a failed seed shows no numbers and
takes no part) gets the mean of its per-seed differences over the seeds both share, with a paired t
test. The p values are Holm-corrected over the pairs of the table (Holm 1979: the i-th smallest of
m is tested at alpha / (m - i + 1), step-down), and each interval is drawn at that pair's Holm level,
so a wide interval says how little the seeds separate once all pairs are looked at. A pair is
"separated" when its Holm-adjusted p is below 1 - LEVEL. A pair with fewer than two shared seeds is
not tested and not separated.

Rank groups: the methods in order of mean final accuracy, and each longest run of neighbours
in which no pair is separated is a group (a letter); a method may sit in two groups when the
separations are not transitive. Methods that share a letter are not told apart by the data.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.significance import LEVEL, _by_seed, _points

NOT_COMPARED = ("joint",)  # the upper bound: trained on every task at once


@dataclass(frozen=True)
class Pair:
    """Row `a` minus row `b` (a has the higher mean); accuracies as fractions, as stored."""

    a: str
    b: str
    diff: float
    seeds: int  # shared seeds
    p: float | None  # paired t test, two-sided; None: fewer than two shared seeds
    p_holm: float | None = None
    interval: tuple[float, float] | None = None  # at the pair's Holm level

    @property
    def separated(self) -> bool:
        return self.p_holm is not None and self.p_holm < 1 - LEVEL


def pairs(rows: pd.DataFrame, seeds: pd.DataFrame) -> tuple[list[str], list[Pair]]:
    """The compared rows' labels in order of mean (highest first) and every pair between them,
    Holm-corrected, in the order of the labels."""
    usable = rows[(rows["n_failed"] == 0) & rows["final_acc_mean"].notna()
                  & ~rows["strategy"].isin(NOT_COMPARED)].sort_values("final_acc_mean", ascending=False)
    labels = list(usable["label"])
    per_seed = {row["label"]: _by_seed(seeds, row) for _, row in usable.iterrows()}
    found = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            common = sorted(set(per_seed[a].index) & set(per_seed[b].index))
            d = per_seed[a][common].to_numpy(float) - per_seed[b][common].to_numpy(float)
            found.append((a, b, d))
    raw = {k: _p(d) for k, (_, _, d) in enumerate(found) if len(d) >= 2}  # pair index -> p
    m = len(raw)
    holm: dict[int, tuple[float, float]] = {}  # pair index -> (adjusted p, level of its interval)
    running = 0.0
    for rank, k in enumerate(sorted(raw, key=raw.get)):
        running = max(running, min(1.0, (m - rank) * raw[k]))
        holm[k] = (running, 1 - (1 - LEVEL) / (m - rank))
    result = []
    for k, (a, b, d) in enumerate(found):
        if k not in holm:
            result.append(Pair(a, b, float(d.mean()) if len(d) else math.nan, len(d), None))
            continue
        p_holm, level = holm[k]
        result.append(Pair(a, b, float(d.mean()), len(d), raw[k], p_holm, _interval(d, level)))
    return labels, result


def _p(d: np.ndarray) -> float:
    """Two-sided p of a paired t test that the mean difference is 0."""
    sd = d.std(ddof=1)
    if sd == 0:  # every seed differs by the same amount: no spread to test against
        return 1.0 if d.mean() == 0 else 0.0
    t = d.mean() / (sd / math.sqrt(len(d)))
    return float(2 * stats.t.sf(abs(t), len(d) - 1))


def _interval(d: np.ndarray, level: float) -> tuple[float, float]:
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def rank_groups(labels: list[str], found: list[Pair]) -> list[list[str]]:
    """Each longest run of neighbours (in mean order) with no pair separated, first to last."""
    apart = {(p.a, p.b) for p in found if p.separated} | {(p.b, p.a) for p in found if p.separated}
    groups: list[list[str]] = []
    for i in range(len(labels)):
        j = i
        while j + 1 < len(labels) and not any((labels[j + 1], x) in apart for x in labels[i:j + 1]):
            j += 1
        if not groups or labels.index(groups[-1][-1]) < j:  # not inside the run before it
            groups.append(labels[i:j + 1])
    return groups


def group_letter(i: int) -> str:
    """The name of the i-th rank group (a, b, ...)."""
    return string.ascii_lowercase[i % 26]


def pairwise_block(rows: pd.DataFrame, seeds: pd.DataFrame) -> str:
    """The rank groups in a sentence and every pair in a folded table (Markdown); empty under two rows."""
    labels, found = pairs(rows, seeds)
    if len(labels) < 2:
        return ""
    tested = [p for p in found if p.p is not None]
    groups = "; ".join(f"{group_letter(i)}: {', '.join(g)}" for i, g in enumerate(rank_groups(labels, found)))
    apart = sum(p.separated for p in found)
    head = (f"All pairs (joint not counted): of {len(found)} pairs, {apart} {'is' if apart == 1 else 'are'} separated "
            f"by a paired t test over the seeds each pair shares, Holm-corrected over the {len(tested)} tested "
            f"(adjusted p < {1 - LEVEL:.2f}). Rank groups, by mean, methods in one group not separated: {groups}.")
    lines = ["| higher | lower | difference (points) | interval at its Holm level | Holm p | separated |",
             "|---|---|---:|---:|---:|---|"]
    for p in found:
        if p.p is None:
            lines.append(f"| {p.a} | {p.b} | {_points(p.diff)} | – | – | not tested ({p.seeds} shared seed) |")
            continue
        low, high = p.interval
        lines.append(f"| {p.a} | {p.b} | {_points(p.diff)} | [{_points(low)}, {_points(high)}] | {p.p_holm:.3g} "
                     f"| {'yes' if p.separated else 'no'} |")
    return "\n".join([head, "", "<details><summary>Every pair</summary>", "", *lines, "", "</details>"])

