"""Does IB's result survive its controls? One line per control row under a table (issue 30).

Each control isolates one thing IB brings besides its method: `replay_ncm` its nearest-class-mean
classifier (plain replay predicting as IB does), the `*_at_ib_size` rows its size (rivals on the
backbone widened to IB's final parameter count), `packnet` and `hat` its closest rivals (a subset of
the weights or units per task, frozen afterwards). Where a table has both IB rows (`ib`, `ib_rate`),
each gets its lines, named. Each line gives IB's mean final accuracy minus
the control's with a 95% t interval, paired over the seeds both rows share (Welch's when they do not
match), as the line on the best other method does (bench/significance.py). A row "at IB's size"
counts only when its parameter count is within 10% of IB's in the table: `naive` stores no data, so
its widened row also shows in a memory-free table where IB has another size.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from bench.significance import IB_ROWS, LEVEL, _by_seed, paired_interval, welch_interval
from bench.summary import KEY

CONTROLS = {
    "replay_ncm": "IB's classifier",
    "naive_at_ib_size": "IB's size",
    "replay_at_ib_size": "IB's size",
    "lwf_at_ib_size": "IB's size",
    "er_ace_at_ib_size": "IB's size",
    "packnet": "a closest rival",
    "hat": "a closest rival",
}
SIZE_TOLERANCE = 0.10  # a row is at IB's size when its parameters are within 10% of IB's


def control_lines(rows: pd.DataFrame, seeds: pd.DataFrame, records: Sequence[dict] = ()) -> list[str]:
    """One sentence per IB row and control row of the table, in table order; none without an IB row.

    Each IB row (`ib`, `ib_rate`) is set against every control, except that a row at IB's size
    counts only against the IB rows it matches in size."""
    usable = rows[(rows["n_failed"] == 0) & rows["final_acc_mean"].notna()]
    ib_rows = usable[usable["strategy"].isin(IB_ROWS)]
    widths = _widths(records)
    lines = []
    for _, ib in ib_rows.iterrows():
        for _, row in usable[usable["strategy"].isin(list(CONTROLS))].iterrows():
            size = ""
            if row["strategy"].endswith("_at_ib_size"):
                ratio = row["params_mean"] / ib["params_mean"]
                if not abs(ratio - 1) <= SIZE_TOLERANCE:
                    continue
                width = widths.get(tuple(row[KEY]))
                size = (f", width x{width:g}" if width is not None else "") + \
                    f", {row['params_mean']:,.0f} parameters ({ratio:.2f}x IB's)"
            lines.append(_line(ib, row, seeds, f"{CONTROLS[row['strategy']]}{size}", len(ib_rows) > 1))
    return lines


def _widths(records: Sequence[dict]) -> dict[tuple, float]:
    out = {}
    for record in records:
        cfg = record["config"]
        width = (cfg.get("params") or {}).get("width")
        if width is not None:
            out[tuple(cfg[k] for k in KEY)] = width
    return out


def _line(ib: pd.Series, control: pd.Series, seeds: pd.DataFrame, what: str, name_ib: bool) -> str:
    a, b = _by_seed(seeds, ib), _by_seed(seeds, control)
    common = sorted(set(a.index) & set(b.index))
    name = f"IB ({ib['label']})" if name_ib else "IB"
    head = (f"{name} against {control['label']} (control for {what}; "
            f"{100 * control['final_acc_mean']:.2f}%)")
    if len(common) >= 2:
        diff, (low, high) = paired_interval(a[common].to_numpy(), b[common].to_numpy())
        basis = f"paired t over seeds {', '.join(map(str, common))}"
    elif len(a) >= 2 and len(b) >= 2:
        diff = float(a.mean() - b.mean())
        low, high = welch_interval(a.to_numpy(), b.to_numpy())
        basis = "Welch t, the seeds do not match"
    else:
        return f"{head}: difference {_points(float(a.mean() - b.mean()))} points; one seed: no interval."
    verdict = ("within noise" if low <= 0 <= high
               else f"IB {'higher' if low > 0 else 'lower'} beyond seed noise")
    return (f"{head}: difference {_points(diff)} points, {LEVEL:.0%} interval "
            f"[{_points(low)}, {_points(high)}] ({basis}): {verdict}.")


def _points(fraction: float) -> str:
    return f"{100 * fraction:+.2f}"
