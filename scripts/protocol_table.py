"""Prints the protocol table of README.md from bench/protocols/*.toml.

    python scripts/protocol_table.py
"""
from __future__ import annotations

from bench.cli import DATASETS, SCENARIOS
from bench.config import load_protocol


def settings(section: dict) -> str:
    return ", ".join(str(v) if k == "name" else f"{k} {v}" for k, v in section.items()
                     if not isinstance(v, dict))


def main() -> None:
    print("| Dataset | Scenario | Backbone | Epochs/task | Batch | Optimizer | Memory | Strategy settings |")
    print("| --- | --- | --- | ---: | ---: | --- | ---: | --- |")
    for dataset in DATASETS:
        for scenario in SCENARIOS:
            p = load_protocol(dataset, scenario)
            own = "; ".join(f"{name}: {settings(s)}" for name, s in p.get("strategies", {}).items())
            print(f"| {dataset} | {scenario} | {p['backbone']} | {p['epochs']} | {p['batch_size']} "
                  f"| {settings(p['optimizer'])} | {p['memory']} | {own} |")


if __name__ == "__main__":
    main()
