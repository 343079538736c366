"""Continual-learning metrics from the accuracy matrix.

R[i][j] is the test accuracy (a fraction) on task j after training task i.
Only j <= i is measured; later tasks are None. A matrix with a single row
(the joint upper bound, trained once on every task) has no forgetting to
measure: those metrics are None rather than a misleading zero.
"""
from __future__ import annotations

from typing import Optional, Sequence

Matrix = Sequence[Sequence[Optional[float]]]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def final_accuracy(r: Matrix) -> float:
    """Mean accuracy over all tasks after the last task."""
    last = [a for a in r[-1] if a is not None]
    return _mean(last)


def average_incremental_accuracy(r: Matrix) -> Optional[float]:
    """Mean over steps i of the mean accuracy on tasks 0..i (Rebuffi et al. 2017)."""
    if len(r) < 2:
        return None
    return _mean([_mean([r[i][j] for j in range(i + 1)]) for i in range(len(r))])


def forgetting(r: Matrix) -> Optional[float]:
    """Chaudhry et al. 2018: mean over tasks j < T-1 of max_{l<T-1} R[l][j] - R[T-1][j]."""
    t = len(r)
    if t < 2:
        return None
    drops = [max(r[l][j] for l in range(j, t - 1)) - r[t - 1][j] for j in range(t - 1)]
    return _mean(drops)


def backward_transfer(r: Matrix) -> Optional[float]:
    """Lopez-Paz & Ranzato 2017: mean over j < T-1 of R[T-1][j] - R[j][j]; negative means forgetting."""
    t = len(r)
    if t < 2:
        return None
    return _mean([r[t - 1][j] - r[j][j] for j in range(t - 1)])


def summarize(r: Matrix) -> dict[str, Optional[float]]:
    return {
        "final_acc": final_accuracy(r),
        "avg_inc_acc": average_incremental_accuracy(r),
        "forgetting": forgetting(r),
        "bwt": backward_transfer(r),
    }
