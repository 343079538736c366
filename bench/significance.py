"""Is IB's lead (or lag) in a table more than seed noise?

In each table, IB's best row (`ib` or `ib_rate`) is set against the best other method by mean
final accuracy (`joint`, trained on every task at once, is the upper bound and not a rival).
The difference of means comes with a 95% t interval: paired over the seeds both
rows share (a seed fixes the data order and the initial weights, so the
per-seed differences cancel what the two runs have in common), or Welch's
interval when the seeds do not match. With three seeds the interval is wide;
the line says so plainly when it contains 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.summary import KEY

LEVEL = 0.95
IB_ROWS = ("ib", "ib_rate")  # the reference's recipe and the preset-rate extension (strategies/ib_rate.py)
RIVAL_EXCLUDED = (*IB_ROWS, "joint")


@dataclass(frozen=True)
class Comparison:
    """IB's row against its best rival in one table; accuracies as fractions, as stored."""

    ib: str  # IB's row label, "" when the table has one IB row
    rival: str
    rival_mean: float
    diff: float  # mean of IB minus mean of the rival, over the seeds used
    interval: tuple[float, float] | None  # None: too few seeds for one
    seeds: tuple[int, ...]  # the paired seeds; empty when unpaired
    how: str  # "paired" | "welch" | "one seed"

    def text(self) -> str:
        ib = f"IB ({self.ib})" if self.ib else "IB"
        head = (f"{ib} against the best other method by mean final accuracy, {self.rival} "
                f"({100 * self.rival_mean:.2f}%; joint, the upper bound, not counted): "
                f"difference {_points(self.diff)} points")
        if self.interval is None:
            return f"{head}; one seed: no interval."
        low, high = self.interval
        basis = (f"paired t over seeds {', '.join(map(str, self.seeds))}" if self.how == "paired"
                 else "Welch t, the seeds do not match")
        if low <= 0 <= high:
            verdict = "within noise (the interval contains 0)"
        else:
            verdict = f"IB {'higher' if low > 0 else 'lower'} beyond seed noise"
        return f"{head}, {LEVEL:.0%} interval [{_points(low)}, {_points(high)}] ({basis}): {verdict}."


def _points(fraction: float) -> str:
    return f"{100 * fraction:+.2f}"


def compare_ib(rows: pd.DataFrame, seeds: pd.DataFrame) -> Comparison | None:
    """IB's best row against the best other row of one table; None without both.

    `rows` are summary rows (`summary_frame`), `seeds` the per-seed rows behind them
    (`seed_frame`). Rows with a failed seed take no part: they show no numbers.
    """
    usable = rows[(rows["n_failed"] == 0) & rows["final_acc_mean"].notna()]
    ib = usable[usable["strategy"].isin(IB_ROWS)]
    rivals = usable[~usable["strategy"].isin(RIVAL_EXCLUDED)]
    if ib.empty or rivals.empty:
        return None
    best_ib = ib.loc[ib["final_acc_mean"].idxmax()]
    rival = rivals.loc[rivals["final_acc_mean"].idxmax()]
    a, b = _by_seed(seeds, best_ib), _by_seed(seeds, rival)
    common = sorted(set(a.index) & set(b.index))
    fields = dict(ib=best_ib["label"] if len(ib) > 1 else "", rival=rival["label"], rival_mean=float(rival["final_acc_mean"]))
    if len(common) >= 2:
        diff, interval = paired_interval(a[common].to_numpy(), b[common].to_numpy())
        return Comparison(**fields, diff=diff, interval=interval, seeds=tuple(common), how="paired")
    diff = float(a.mean() - b.mean())
    if len(a) >= 2 and len(b) >= 2:
        return Comparison(**fields, diff=diff, interval=welch_interval(a.to_numpy(), b.to_numpy()),
                          seeds=(), how="welch")
    return Comparison(**fields, diff=diff, interval=None, seeds=tuple(common), how="one seed")


def _by_seed(seeds: pd.DataFrame, row: pd.Series) -> pd.Series:
    """Final accuracy per seed of one summary row."""
    mine = seeds[(seeds[KEY] == row[KEY].to_numpy()).all(axis=1)]
    return pd.Series(mine["final_acc"].astype(float).to_numpy(), index=mine["seed"].astype(int)).sort_index()


def paired_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Mean of a - b and its t interval over pairs (at least 2)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    half = stats.t.ppf(0.5 + LEVEL / 2, n - 1) * d.std(ddof=1) / math.sqrt(n)
    return float(d.mean()), (float(d.mean() - half), float(d.mean() + half))


def welch_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """t interval of mean(a) - mean(b) for unpaired samples with unequal variances (Welch)."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    diff = float(np.mean(a) - np.mean(b))
    if va + vb == 0:
        return diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * math.sqrt(va + vb)
    return diff - half, diff + half


def significance_line(rows: pd.DataFrame, seeds: pd.DataFrame) -> str:
    """The sentence under a table; empty when the table has no IB row with every seed ok or no rival."""
    comparison = compare_ib(rows, seeds)
    return comparison.text() if comparison is not None else ""
