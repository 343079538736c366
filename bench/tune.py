"""`python -m bench tune`: every method's settings chosen the same way, on held-out training data.

The protocol file declares, beside the values it runs with, one trial budget and a
search space per strategy:

    [tune]
    budget = 8
    [tune.ewc]
    lambda = [1e2, 1e3, 1e4, 1e5, 1e6, 1e7]

A strategy whose grid has at most `budget` points gets all of them; a larger grid
gets `budget` points drawn with the seed; strategies without a space (naive,
joint) need no trials. The optimizer, learning rate, batch size and epochs stay
the protocol's for every method (`--epochs N` shortens every trial alike).
Memory-free rows (`--memory 0`) search `[tune.memory0.<name>]` where the file
declares one, else the same `[tune.<name>]`.

Trials are ordinary cells run with `--holdout`: they train on the training split
minus a held-out part and are scored on that part, never on the test split.
The score is the final average accuracy over all tasks. Trial records live under
`<results>/tune/`, where tables never look; they resume and are skipped when
done, like any cell. The best point is written back into the protocol file
(the run's memory budget is the protocol's: `[strategies.<name>]`; memory 0 on
a protocol with a budget: `[memory0.<name>]`), with a comment naming the
command, the score and the date, and a `tuned` list that every later record
carries in its configuration.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import random
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEFAULT_BUDGET = 8


def add_parser(sub, count, fraction, datasets, scenarios) -> argparse.ArgumentParser:
    import os

    p = sub.add_parser("tune", help="choose each strategy's settings on held-out training data")
    p.add_argument("--scenario", required=True, choices=scenarios)
    p.add_argument("--dataset", default="mnist", choices=datasets)
    p.add_argument("--strategies", default=None,
                   help="comma-separated names (default: every strategy with a search space that applies)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=count(1), default=None, help="score each point over seeds 0..N-1")
    seeds.add_argument("--seed", type=count(0), default=None, help="score with this one seed (default 0); "
                       "it also draws the points of grids larger than the budget")
    p.add_argument("--budget", type=count(1), default=None,
                   help="trials per strategy (default: the protocol's [tune] budget, else 8)")
    p.add_argument("--holdout", type=fraction, default=0.1,
                   help="fraction of the training data held out to score the trials (default 0.1)")
    p.add_argument("--memory", type=count(0), default=None,
                   help="replay budget (default: the protocol's); 0 tunes the memory-free rows")
    p.add_argument("--epochs", type=count(1), default=None,
                   help="epochs per task of every trial (default: the protocol's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a protocol setting for the trials")
    p.add_argument("--no-write", action="store_true", help="report the best values, leave the protocol file")
    p.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT", "./data"))
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="trial records go under RESULTS/tune/ (default: results)")
    p.add_argument("--jobs", type=count(1), default=os.cpu_count() or 1)
    p.add_argument("--threads", type=count(1), default=1)
    p.add_argument("--force", action="store_true", help="rerun trials that already have a record")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-download", action="store_true")
    return p


def search_spaces(protocol: dict[str, Any], known: dict,
                  memory: int | None = None) -> tuple[int, dict[str, dict[str, list]]]:
    """The protocol's budget and search spaces, every value checked against the strategy's settings.

    At memory 0 a strategy's `[tune.memory0.<name>]` space, where the protocol has one, replaces
    its `[tune.<name>]`: the memory-free rows keep their own grid when the other rows' grid moves.
    Raises ValueError naming the first bad entry.
    """
    section = protocol.get("tune", {})
    if not isinstance(section, dict):
        raise ValueError(f"tune must be a section, got {section!r}")
    budget = section.get("budget", DEFAULT_BUDGET)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"tune.budget must be a whole number >= 1, got {budget!r}")
    memory0 = section.get("memory0", {})
    if not isinstance(memory0, dict):
        raise ValueError(f"tune.memory0 must be a section, got {memory0!r}")
    spaces = {name: _checked(f"tune.{name}", name, space, known)
              for name, space in section.items() if name not in ("budget", "memory0")}
    own = {name: _checked(f"tune.memory0.{name}", name, space, known) for name, space in memory0.items()}
    return budget, ({**spaces, **own} if memory == 0 else spaces)


def _checked(where: str, name: str, space: Any, known: dict) -> dict[str, list]:
    """One strategy's search space with its values checked, or ValueError."""
    from bench.settings import SettingError

    if name not in known:
        raise ValueError(f"unknown strategy section [{where}]; valid: {', '.join(known)}")
    if not isinstance(space, dict) or not space:
        raise ValueError(f"{where} must be a section of KEY = [values], got {space!r}")
    settings = known[name].settings
    for key, values in space.items():
        if key not in settings:
            raise ValueError(f"{where}.{key}: {name} has no setting {key}; valid: {', '.join(settings) or 'none'}")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}.{key} must be a non-empty list of values, got {values!r}")
        try:
            space[key] = [settings[key].check(f"{where}.{key}", v) for v in values]
        except SettingError as exc:
            raise ValueError(str(exc)) from None
    return space


def trial_points(space: dict[str, list], budget: int, seed: int) -> list[dict[str, Any]]:
    """The whole grid when it has at most `budget` points, else `budget` of them drawn with `seed`."""
    keys = list(space)
    grid = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    if len(grid) <= budget:
        return grid
    return random.Random(seed).sample(grid, budget)


def cmd_tune(args, argv: list[str]) -> int:
    from bench import cli, registry
    from bench.plan import UsageError, plan
    from bench import config as cfg
    from bench.records import identity
    from bench.runner import Cell, finished_ok, print_line, record_path

    known = registry.strategies()
    try:
        protocol = cfg.apply_overrides(cfg.load_protocol(args.dataset, args.scenario), args.overrides)
        memory = protocol.get("memory") if args.memory is None else args.memory
        budget, spaces = search_spaces(protocol, known, memory)
    except (cfg.ConfigError, ValueError) as exc:
        raise UsageError(f"protocol {args.dataset}-{args.scenario}: {exc}") from None
    budget = args.budget or budget
    named = [s.strip() for s in args.strategies.split(",") if s.strip()] if args.strategies else None
    for name in named or []:
        if name in known and name not in spaces:
            raise UsageError(f"{name} has no search space in {cfg.protocol_path(args.dataset, args.scenario)}"
                                 f" (add [tune.{name}] with KEY = [values])")
    chosen = []
    for name in named or list(spaces):
        reason = known[name].why_not(args.dataset, args.scenario, memory, protocol.get("backbone")) \
            if name in known and not named else None
        if reason:
            print_line(f"skip {name}: {reason}")
        else:
            chosen.append(name)
    if not chosen:
        raise UsageError(f"nothing to tune for {args.dataset} {args.scenario} at memory {memory}")

    plan_args = copy.copy(args)
    plan_args.strategies = ",".join(chosen)
    plan_args.results = args.results / "tune"
    base, _ = plan(plan_args)  # every check of `run`, and the data loaded once

    print_line(f"tuning {args.dataset} {args.scenario} at memory {memory}: budget {budget} trials per "
               f"strategy, scored on {args.holdout:g} of the training data held out")
    trials: dict[str, list[tuple[dict, list[Cell]]]] = {}
    todo, done = [], 0
    for name in chosen:
        points = trial_points(spaces[name], budget, args.seed or 0)
        grid = ", ".join(f"{k} in {spaces[name][k]}" for k in spaces[name])
        print_line(f"  {name}: {grid}: {len(points)} trial(s)")
        trials[name] = []
        for point in points:
            cells = []
            for cell, _ in (c for c in base if c[0].config["strategy"] == name):
                config = copy.deepcopy(cell.config)
                config["params"].update(point)
                config.pop("tuned", None)  # a trial runs the values it tries
                if args.epochs is not None:  # the same epochs for every method, strategy sections too
                    config["epochs"] = args.epochs
                config["hash"] = cfg.config_hash(config)
                trial = Cell(config, record_path(plan_args.results, config), code=cell.code)
                cells.append(trial)
                wanted = identity(config, cell.code, args.device, args.threads)
                if finished_ok(trial.path, wanted) and not args.force:
                    done += 1
                else:
                    todo.append(trial)
            trials[name].append((point, cells))
    print_line(f"{len(todo)} trial(s) to run, {done} already done")
    cli.check_executor(args)
    outcome = cli.execute(todo, args, "python -m bench " + shlex.join(argv),
                          on_done=lambda cell, rec: print_line(f"  trial {_describe(cell.config)}: {_score_text(rec)}"))
    if outcome.interrupted:
        print_line("interrupted: run the same command again to finish the remaining trials")
        return cli.EXIT_INTERRUPTED

    command = "python -m bench " + shlex.join(argv)
    failed = False
    for name, scored in trials.items():
        best, best_score = None, None
        for point, cells in scored:
            score = _mean_score(cells)
            text = "failed" if score is None else f"{100 * score:.2f}%"
            print(f"{args.dataset} {args.scenario} {name} {_show(point)}: held-out final accuracy {text}")
            if score is not None and (best_score is None or score > best_score):
                best, best_score = point, score
        if best is None:
            print_line(f"{name}: every trial failed; nothing written")
            failed = True
            continue
        print(f"{args.dataset} {args.scenario} {name}: best {_show(best)} ({100 * best_score:.2f}%)")
        if not args.no_write:
            _write_choice(args, protocol, memory, name, best, best_score, command)
    return cli.EXIT_FAILED if failed or outcome.failed else 0


def _mean_score(cells: list) -> float | None:
    """Mean final accuracy over the seeds of one point; None when any seed has no ok record."""
    scores = []
    for cell in cells:
        try:
            record = json.loads(cell.path.read_text())
        except (OSError, ValueError):
            return None
        if record.get("status") != "ok":
            return None
        scores.append(record["metrics"]["final_acc"])
    return sum(scores) / len(scores) if scores else None


def _describe(config: dict) -> str:
    return f"{config['strategy']} seed {config['seed']} {_show(config['params'])}"


def _score_text(record: dict) -> str:
    if record.get("status") != "ok":
        return f"FAILED: {record.get('error')}"
    return f"held-out final accuracy {100 * record['metrics']['final_acc']:.2f}%"


def _show(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _write_choice(args, protocol: dict, memory: int, name: str, best: dict, score: float, command: str) -> None:
    """Write the chosen values where the next `run` at this memory reads them, keeping the file's comments."""
    import tomlkit

    from bench import config as cfg
    from bench.runner import print_line

    path = cfg.protocol_path(args.dataset, args.scenario)
    document = tomlkit.parse(path.read_text())
    if memory == document.get("memory"):
        where = "strategies"
    elif memory == 0:
        where = "memory0"
    else:
        print_line(f"not written: tuned at memory {memory}, the protocol runs {document.get('memory')}")
        return
    if where not in document:
        document.add(tomlkit.nl())
        document.add(where, tomlkit.table(is_super_table=True))
    if name not in document[where]:
        document[where].add(name, tomlkit.table())
    section = document[where][name]
    date = datetime.now(timezone.utc).date().isoformat()
    for key, value in best.items():
        section[key] = "none" if value is None else value  # TOML has no null (strategies.ib.NONE)
        section.item(key).comment(f"tuned {date}: held-out final accuracy {100 * score:.2f}% by `{command}`")
    section["tuned"] = sorted(set(section.get("tuned", [])) | set(best))
    path.write_text(tomlkit.dumps(document))
    print_line(f"written to {path} [{where}.{name}]: {_show(best)}")
