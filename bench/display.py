"""The order `bench list` and `bench run` go through the strategies in.

Kept out of `bench/registry.py` on purpose: the registry runs in every cell, so
its source is part of every record's code fingerprint (bench/provenance.py), and
a list there would make adding a strategy to it turn every finished record stale.
No cell imports this module. Strategies not named here follow in name order.
(Tables order their rows by `bench.summary.STRATEGY_ORDER`, also outside the cell.)
"""
from __future__ import annotations

from typing import Iterable

# Marks a table row whose strategy ran on its declared defaults (no protocol section: not tuned there).
UNTUNED_MARK = "‡"

ORDER = ("naive", "joint", "replay", "ewc", "lwf", "si", "mas", "icarl", "agem", "gdumb", "bic", "derpp", "er_ace",
         "supportnet", "pnc", "pnn", "ib", "ib_rate")


def ordered(names: Iterable[str]) -> list[str]:
    """`names` in display order: those in ORDER first, as listed there, then the others by name."""
    names = list(names)
    return [n for n in ORDER if n in names] + sorted(n for n in names if n not in ORDER)
