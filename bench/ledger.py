"""The tuning ledger: how many looks at held-out data each method had, per protocol and memory.

Every look leaves a record: a `bench tune` trial under `<results>/tune/runs/`, a
`bench run --holdout` cell under `<results>/runs/` with `config.holdout > 0`; a
record that a later run replaced (rerun by newer code, or with `--force`) leaves
a line in its folder's `replaced_looks.jsonl` (bench/records.py), counted too. The ledger
is derived from those records alone, so the tuning history already on disk is
counted the same way as what is tuned from now on. Looks that left no record
(a run into a scratch folder that was thrown away) cannot be counted: copy
their records into `<results>/tune/runs/` to have them counted.

How a grid move shows in the records: a search is one `bench tune` command run
by one code version at one length (`command`, `code`, `epochs`); when the
protocol's search space moves (widened at an edge, a setting added or dropped),
the next search trains points the earlier one did not, and the earlier
search's points that left the space stay on disk (the same command rerun by
the same code after the grid moved is one search: only the points show the
move). So per method the ledger
counts the searches, the trials whose point is not in today's search space
("off today's grid"), and the trials beyond one search of today's grid
("beyond one search": grid moves, reruns by newer code, other lengths, extra
seeds, diagnostic looks). "Short of the most" is how many trials fewer than the
most-tuned method of the same protocol and memory it had; "top-up" how many of its
trials `bench tune --top-up` added at seeds after 0 (their records' command says so).

No torch, no pandas: `python -m bench tune --ledger` is cheap.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

LEDGER_NAME = "tuning_ledger.md"


@dataclass
class Line:
    """One method's looks at one protocol and memory."""
    dataset: str
    scenario: str
    memory: int
    strategy: str
    trials: int = 0
    failed: int = 0
    points: set = field(default_factory=set)
    searches: set = field(default_factory=set)
    epochs: set = field(default_factory=set)
    off_grid: int = 0
    other_looks: int = 0  # held-out cells of `bench run --holdout`, not trials of `bench tune`
    one_search: int | None = None  # trials one search of today's grid takes (None: no space today)
    top_up: int = 0  # trials that `bench tune --top-up` added to even out the looks (seeds 1, 2, ...)


def is_top_up(command: Any) -> bool:
    """Whether a record's command line was a `bench tune --top-up`."""
    return isinstance(command, str) and "--top-up" in command.split()


def _records(folder: Path) -> Iterable[Any]:
    """The records in `folder` and the replaced ones summarised beside them (what does not parse: None)."""
    from bench.records import REPLACED_LOOKS

    for path in sorted(folder.glob("**/*.json")):
        try:
            yield json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            yield None
    for path in sorted(folder.glob(f"**/{REPLACED_LOOKS}")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                yield None


def held_out_records(results: Path) -> Iterable[dict[str, Any]]:
    """Every record of a look at held-out data under `results` (tune trials, `run --holdout` cells)."""
    folders = [(Path(results) / "tune" / "runs", True), (Path(results) / "runs", False)]
    for folder, is_tune in folders:
        if not folder.is_dir():
            continue
        for record in _records(folder):
            try:
                config = record["config"]
                holdout = float(config.get("holdout") or 0)
                key = (str(config["dataset"]), str(config["scenario"]), int(config.get("memory") or 0),
                       str(config["strategy"]))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # not a record: nothing to count
            if holdout > 0:
                yield {**record, "_key": key, "_tune": is_tune}


def ledger(results: Path, protocols: dict[tuple[str, str], dict] | None = None) -> list[Line]:
    """One line per (dataset, scenario, memory, method) that had a look, in a stable order.

    `protocols` maps (dataset, scenario) to the protocol as loaded today; with it, each
    trial is placed on or off today's search space and one search's size is known."""
    lines: dict[tuple, Line] = {}
    for record in held_out_records(results):
        key = record["_key"]
        line = lines.setdefault(key, Line(*key))
        config = record["config"]
        params = config.get("params") if isinstance(config.get("params"), dict) else {}
        if not record["_tune"]:
            line.other_looks += 1
            continue
        line.trials += 1
        # a top-up's seed-0 trials are its search's (run by the top-up when the search had not been)
        line.top_up += is_top_up(record.get("command")) and config.get("seed") not in (0, None)
        line.failed += record.get("status") != "ok"
        line.points.add(json.dumps(params, sort_keys=True))
        line.searches.add((record.get("command"), record.get("code"), config.get("epochs")))
        line.epochs.add(config.get("epochs"))
        space, budget = _today(protocols, key)
        if space is not None:
            line.off_grid += not all(k in params and params[k] in values for k, values in space.items())
    for key, line in lines.items():
        space, budget = _today(protocols, key)
        if space is not None:
            size = 1
            for values in space.values():
                size *= len(values)
            line.one_search = min(size, budget)
    return [lines[k] for k in sorted(lines)]


def _today(protocols: dict | None, key: tuple) -> tuple[dict | None, int]:
    """Today's search space of a method at a memory (as `bench tune` picks it) and the budget."""
    dataset, scenario, memory, strategy = key
    tune = (protocols or {}).get((dataset, scenario), {}).get("tune", {})
    if not isinstance(tune, dict):
        return None, 0
    budget = tune.get("budget", 8)
    own = tune.get("memory0", {}).get(strategy) if memory == 0 else None
    space = own if isinstance(own, dict) else tune.get(strategy)
    return (space if isinstance(space, dict) else None), budget if isinstance(budget, int) else 8


def markdown(lines: list[Line], protocols: dict[tuple[str, str], dict] | None = None) -> str:
    """The ledger as Markdown: one table per protocol, a row per memory and method."""
    if not lines:
        return "No held-out looks recorded (no trial records under RESULTS/tune/runs/).\n"
    out = ["# Tuning ledger", "",
           "Looks at held-out training data per method, counted from the records (python -m bench tune --ledger).",
           "A trial is one held-out training run of one grid point at one seed. A search is one `bench tune` "
           "command run by one code version at one length. Off today's grid: trials whose point left the "
           "protocol's search space (the grid moved). Beyond one search: trials more than one search of "
           "today's grid takes. Short of the most: trials fewer than the most-tuned method of the same "
           "protocol and memory. Other looks: `bench run --holdout` cells. Top-up: trials that `bench tune --top-up` "
           "added to even out the looks (whole seeds of a method's points, so a method may end a few trials "
           "above the target: the most-tuned other method's trials before top-ups).", ""]
    by_protocol: dict[tuple, list[Line]] = defaultdict(list)
    for line in lines:
        by_protocol[(line.dataset, line.scenario)].append(line)
    for (dataset, scenario), group in by_protocol.items():
        protocol_epochs = (protocols or {}).get((dataset, scenario), {}).get("epochs")
        out += [f"## {dataset} {scenario}" + (f" (protocol: {protocol_epochs} epochs per task)"
                                              if protocol_epochs else ""), "",
                "| memory | method | trials | failed | points | searches | trial epochs | off today's grid "
                "| one search today | beyond one search | short of the most | other looks | top-up |",
                "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
        most = defaultdict(int)
        for line in group:
            most[line.memory] = max(most[line.memory], line.trials)
        for line in sorted(group, key=lambda x: (-x.memory, x.strategy)):
            epochs = ", ".join(str(e) for e in sorted(e for e in line.epochs if e is not None)) or "-"
            one = "-" if line.one_search is None else str(line.one_search)
            beyond = "-" if line.one_search is None else str(max(0, line.trials - line.one_search))
            off = "-" if line.one_search is None else str(line.off_grid)
            out.append(f"| {line.memory} | {line.strategy} | {line.trials} | {line.failed} | {len(line.points)} "
                       f"| {len(line.searches)} | {epochs} | {off} | {one} | {beyond} "
                       f"| {most[line.memory] - line.trials} | {line.other_looks} | {line.top_up} |")
        out.append("")
    return "\n".join(out)


def current_protocols() -> dict[tuple[str, str], dict]:
    """Every protocol file as it reads today (a file that does not parse is left out)."""
    from bench import config as cfg

    found = {}
    for path in sorted(cfg.PROTOCOL_DIR.glob("*.toml")):
        dataset, scenario = path.stem.split("-", 1)
        try:
            found[(dataset, scenario)] = cfg.load_protocol(dataset, scenario)
        except cfg.ConfigError:
            continue
    return found


def write_ledger(results: Path) -> tuple[Path, str]:
    """Write `<results>/tables/tuning_ledger.md` from the records under `results`; returns (path, text)."""
    from bench.files import atomic_write

    protocols = current_protocols()
    text = markdown(ledger(results, protocols), protocols)
    path = Path(results) / "tables" / LEDGER_NAME
    atomic_write(path, text)
    return path, text
