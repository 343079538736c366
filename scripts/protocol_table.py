"""Prints the protocol table of README.md from bench/protocols/*.toml.

    python scripts/protocol_table.py

Each strategy setting shows its value and, where the protocol declares one, the search space
of `python -m bench tune` it was (or is to be) chosen from; `tuned` marks values written by it.
"""
from __future__ import annotations

from bench.cli import DATASETS, SCENARIOS
from bench.config import load_protocol


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def settings(section: dict, space: dict | None = None) -> str:
    space, tuned = space or {}, section.get("tuned", [])
    parts = []
    # a searched setting the section leaves at the strategy's default is listed by its space alone
    missing = {k: "default" for k in space if k not in section}
    for k, v in {**section, **missing}.items():
        if isinstance(v, dict) or k == "tuned":
            continue
        text = _value(v) if k == "name" else f"{k} {_value(v)}"
        if k in space:
            grid = ", ".join(map(_value, space[k]))
            text += f" (tuned from {{{grid}}})" if k in tuned else f" (not tuned yet; space {{{grid}}})"
        parts.append(text)
    return ", ".join(parts)


def main() -> None:
    print("| Dataset | Scenario | Backbone | Epochs/task | Batch | Optimizer | Memory | Augment "
          "| Strategy settings (search space) |")
    print("| --- | --- | --- | ---: | ---: | --- | ---: | --- | --- |")
    for dataset in DATASETS:
        for scenario in SCENARIOS:
            p = load_protocol(dataset, scenario)
            spaces = p.get("tune", {})
            own = [f"{name}: {settings(s, spaces.get(name))}" for name, s in p.get("strategies", {}).items()]
            own += [f"{name} at memory 0: {settings(s, spaces.get(name))}"
                    for name, s in p.get("memory0", {}).items()]
            print(f"| {dataset} | {scenario} | {p['backbone']} | {p['epochs']} | {p['batch_size']} "
                  f"| {settings(p['optimizer'])} | {p['memory']} | {'yes' if p.get('augment') else 'no'} "
                  f"| {'; '.join(own)} |")


if __name__ == "__main__":
    main()
