"""The width multipliers of the rows "at IB's size": per table and IB row (`ib`, `ib_rate`), the backbone
width whose parameter count is nearest that row's seed-0 count in the committed records (issue 30).

    python scripts/ib_size.py [--results results]

Reads `<results>/runs/*_ib_seed0_*.json` and `*_ib_rate_seed0_*.json` (read-only) and prints, per
(dataset, scenario, memory) and IB row, its final parameter count, the multiplier (two decimals) and the widened backbone's count with its
ratio to IB's. The protocols' `[strategies.<name>_at_ib_size] width` values come from here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import models  # noqa: E402

N_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100, "omniglot": 1623}


def param_count(dataset: str, backbone: str | None, width: float) -> int:
    """Parameters of the widened backbone plus heads over every class (one head or one per task:
    the same count), as a naive row's record states it."""
    features = models.build_features(dataset, backbone, width)
    return models.count_params(features) + (features.out_features + 1) * N_CLASSES[dataset]


def width_for(dataset: str, backbone: str | None, target: int, step: float = 0.01) -> float:
    """The multiplier (a multiple of `step`) whose parameter count is nearest `target`."""
    low, high = 1.0, 1.0
    while param_count(dataset, backbone, high) < target:  # bracket, then bisect on the grid
        low, high = high, high * 2
    lo, hi = round(low / step), round(high / step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if param_count(dataset, backbone, mid * step) < target:
            lo = mid
        else:
            hi = mid
    return min((lo * step, hi * step), key=lambda w: abs(param_count(dataset, backbone, w) - target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    args = parser.parse_args()
    print(f"{'table':32} {'row':8} {'IB params':>11} {'width':>6} {'params':>11} {'ratio':>6}")
    runs = Path(args.results, "runs")
    for path in sorted([*runs.glob("*_ib_seed0_*.json"), *runs.glob("*_ib_rate_seed0_*.json")]):
        record = json.loads(path.read_text())
        cfg = record["config"]
        if record.get("status") != "ok" or cfg.get("holdout"):
            continue
        target = record["params"]
        width = width_for(cfg["dataset"], cfg["backbone"], target)
        count = param_count(cfg["dataset"], cfg["backbone"], width)
        table = f"{cfg['dataset']} {cfg['scenario']} memory {cfg['memory']}"
        print(f"{table:32} {cfg['strategy']:8} {target:>11,} {width:>6.2f} {count:>11,} {count / target:>6.3f}")


if __name__ == "__main__":
    main()
