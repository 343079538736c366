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

Before the first trial, the write-back is tried on a copy of the protocol text: a
file that cannot be rewritten (permissions) or a section in a form this code does
not edit (an inline table `lwf = { ... }`, dotted keys `strategies.lwf.alpha = 5`)
stops the tune with exit 2. The write itself holds a lock on the protocol (two tunes
at once do not lose each other's winners) and is atomic (bench/protocol_writeback.py,
bench/files.py).
A point whose settings `run` would refuse together (the strategy's `conflict`) is
not trained: it is counted as not run. A winner is written only when every trial of
its grid has a score; a trial that failed or that another run holds leaves the
protocol as it was, names the trial, and the exit code is 1. A winner found under
settings other than the protocol's (`--set`, `--epochs`) is not written unless
`--write-overridden` is given, and then its comment says under what.
When every trial of a method scores within `FLAT_POINTS` of each other, the grid is
flat: a warning says the setting may have no effect, and the values are written with
a "flat grid" comment instead of "tuned" and stay out of the `tuned` list.
After a tune, the ledger of looks per method (bench/ledger.py) is rewritten under
`<results>/tables/`; `python -m bench tune --ledger` prints it. `--top-up` gives a
method that the ledger shows short of looks the difference: its points are scored over
seeds 0, 1, ... until its looks, this search's included, reach those of the most-tuned
other method of the protocol and memory; the winner is the best mean over those seeds.
The target counts the other methods' looks without their own top-ups: whole seeds
overshoot it by different amounts, and a target that counted them would rise with every
rerun of an interrupted top-up.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import random
import shlex
from pathlib import Path
from typing import Any

from bench.protocol_writeback import check_write_back, show_point, write_choice

DEFAULT_BUDGET = 8
FLAT_POINTS = 0.5  # max - min held-out accuracy (in points) under which a grid is called flat


def add_parser(sub, count, fraction, datasets, scenarios) -> argparse.ArgumentParser:
    import os

    p = sub.add_parser("tune", help="choose each strategy's settings on held-out training data")
    p.add_argument("--scenario", default=None, choices=scenarios, help="required, except with --ledger")
    p.add_argument("--dataset", default=None, choices=datasets, help="default: mnist")
    p.add_argument("--strategies", default=None,
                   help="comma-separated names (default: every strategy with a search space that applies)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=count(1), default=None, help="score each point over seeds 0..N-1")
    seeds.add_argument("--seed", type=count(0), default=None, help="score with this one seed (default 0); "
                       "it also draws the points of grids larger than the budget")
    seeds.add_argument("--top-up", action="store_true",
                       help="give each strategy as many more seeds of its points (1, 2, ...) as it takes to "
                            "have, with this search, at least the looks at held-out data of the most-tuned "
                            "other strategy of this protocol and memory in the ledger")
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
    p.add_argument("--write-overridden", action="store_true",
                   help="write the winner back even when the trials ran under --set or --epochs other than the "
                        "protocol's (the comment names them); without it such a winner is only reported")
    p.add_argument("--ledger", action="store_true",
                   help="print the ledger of held-out looks per method from the trial records under "
                        "RESULTS/tune/ (only of --dataset/--scenario when given), write it to "
                        "RESULTS/tables/tuning_ledger.md, and train nothing")
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
    from bench import registry
    from bench.executors import EXIT_FAILED, EXIT_INTERRUPTED, check_executor, execute
    from bench.plan import UsageError, plan
    from bench import config as cfg
    from bench.records import identity
    from bench.runner import Cell, finished_ok, print_line, record_path

    if args.ledger:
        return print_ledger(args)
    if args.scenario is None:
        raise UsageError("tune needs --scenario (class-il or task-il)")
    args.dataset = args.dataset or "mnist"
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
    points = {name: trial_points(spaces[name], budget, args.seed or 0) for name in chosen}
    if args.top_up:
        looks = looks_at(args.results, args.dataset, args.scenario, memory)
        plan_args.seeds = max(_most_seeds(looks, name, len(points[name])) for name in chosen)
    base, _ = plan(plan_args)  # every check of `run`, and the data loaded once
    overridden = _overridden(args, protocol, chosen)
    write = not args.no_write and (not overridden or args.write_overridden)
    if write:
        check_write_back(args, memory, {name: trial_points(spaces[name], 1, 0)[0] for name in chosen})
    elif not args.no_write:
        print_line(f"the winners will not be written: the trials run under {', '.join(overridden)}, not the "
                   f"protocol's settings (--write-overridden writes them, with a comment saying so)")

    print_line(f"tuning {args.dataset} {args.scenario} at memory {memory}: budget {budget} trials per "
               f"strategy, scored on {args.holdout:g} of the training data held out")
    trials: dict[str, list[tuple[dict, list[Cell]]]] = {}
    todo, done, refused = [], 0, 0

    def trial_done(cell: Cell, point: dict[str, Any]) -> bool:
        config = _trial_config(cell.config, point, args.epochs)
        return finished_ok(record_path(plan_args.results, config),
                           identity(config, cell.code, args.device, args.threads))

    for name in chosen:
        grid = ", ".join(f"{k} in {spaces[name][k]}" for k in spaces[name])
        seeds = None
        if args.top_up:
            ours = [cell for cell, _ in base if cell.config["strategy"] == name]
            seeds = top_up_seeds(looks, name, len(points[name]),
                                 sum(trial_done(cell, point) for cell in ours for point in points[name]))
            print_line(f"  {name}: {looks[name][0] if name in looks else 0} look(s) so far, the most-tuned "
                       f"other {_most_other(looks, name)} before top-ups: seeds 0-{seeds - 1}")
        print_line(f"  {name}: {grid}: {len(points[name])} trial(s)" + (f" x {seeds} seeds" if seeds else ""))
        trials[name] = []
        for point in points[name]:
            cells = []
            for cell, _ in (c for c in base if c[0].config["strategy"] == name
                            and (seeds is None or c[0].config["seed"] < seeds)):
                config = _trial_config(cell.config, point, args.epochs)
                cells.append(Cell(config, record_path(plan_args.results, config), code=cell.code))
            problem = known[name].conflict(cells[0].config["params"]) if cells else None
            if problem:  # `run` would refuse these values together: not a trial, nothing to win
                print_line(f"  not run: {name} {show_point(point)}: `run` refuses it: {problem}")
                refused += 1
                continue
            for trial in cells:
                wanted = identity(trial.config, trial.code, args.device, args.threads)
                if finished_ok(trial.path, wanted) and not args.force:
                    done += 1
                else:
                    todo.append(trial)
            trials[name].append((point, cells))
    print_line(f"{len(todo)} trial(s) to run, {done} already done" +
               (f", {refused} not run (settings `run` refuses)" if refused else ""))
    check_executor(args)
    elsewhere: set[str] = set()

    def on_skip(cell, why):
        elsewhere.add(str(cell.path))
        print_line(f"  trial {_describe(cell.config)}: not run here, {why}")

    outcome = execute(todo, args, "python -m bench " + shlex.join(argv),
                      on_done=lambda cell, rec: print_line(f"  trial {_describe(cell.config)}: {_score_text(rec)}"),
                      on_skip=on_skip)
    if outcome.interrupted:
        print_line("interrupted: run the same command again to finish the remaining trials")
        return EXIT_INTERRUPTED

    command = "python -m bench " + shlex.join(argv)
    failed = False
    for name, scored in trials.items():
        scores, missing = [], []
        for point, cells in scored:
            score = _mean_score(cells)
            why = None if score is not None else _missing_reason(cells, elsewhere)
            text = f"{100 * score:.2f}%" if score is not None else why
            print(f"{args.dataset} {args.scenario} {name} {show_point(point)}: held-out final accuracy {text}")
            if score is None:
                missing.append(f"{show_point(point)} ({why})")
            else:
                scores.append((score, point))
        if missing:
            print_line(f"{name}: nothing written: {len(missing)} of {len(scored)} trial(s) have no score: "
                       + "; ".join(missing) + ". Run the same command again once they can finish")
            failed = True
            continue
        if not scores:
            print_line(f"{name}: no trial to score; nothing written")
            continue
        best_score, best = max(scores, key=lambda item: item[0])
        spread = 100 * (best_score - min(score for score, _ in scores))
        flat = len(scores) > 1 and spread < FLAT_POINTS
        print(f"{args.dataset} {args.scenario} {name}: best {show_point(best)} ({100 * best_score:.2f}%)")
        if flat:
            print_line(f"warning: {name}: flat grid: all {len(scores)} trials within {spread:.2f} points "
                       f"(under {FLAT_POINTS}); the setting may have no effect, the best point is not a choice")
        if write:
            write_choice(args, memory, name, best, best_score, command,
                         overridden=overridden, flat=(spread, len(scores)) if flat else None)
    _write_ledger(args.results)
    return EXIT_FAILED if failed or outcome.failed else 0


def _trial_config(config: dict[str, Any], point: dict[str, Any], epochs: int | None) -> dict[str, Any]:
    """The configuration of the trial of `point` in the cell planned with `config`."""
    from bench import config as cfg

    config = copy.deepcopy(config)
    config["params"].update(point)
    config.pop("tuned", None)  # a trial runs the values it tries
    if epochs is not None:  # the same epochs for every method, strategy sections too
        config["epochs"] = epochs
    config["hash"] = cfg.config_hash(config)
    return config


def looks_at(results: Path, dataset: str, scenario: str, memory: int) -> dict[str, tuple[int, int]]:
    """Per strategy at this protocol and memory: its trials as the ledger counts them, and how
    many of them top-ups added."""
    from bench import ledger

    return {line.strategy: (line.trials, line.top_up) for line in ledger.ledger(results)
            if (line.dataset, line.scenario, line.memory) == (dataset, scenario, memory)}


def _most_other(looks: dict[str, tuple[int, int]], name: str) -> int:
    """What a top-up brings `name` to: the looks of the most-tuned other strategy, its own top-ups
    not counted (they overshoot by up to a seed's points; counting them would raise the target
    at every rerun)."""
    return max((trials - top_up for s, (trials, top_up) in looks.items() if s != name), default=0)


def _most_seeds(looks: dict[str, tuple[int, int]], name: str, points: int) -> int:
    """Seeds to plan for a top-up: enough for the target, and for every look the ledger counts."""
    return max(1, -(-max(_most_other(looks, name), looks.get(name, (0, 0))[0]) // points))


def top_up_seeds(looks: dict[str, tuple[int, int]], name: str, points: int, done: int) -> int:
    """How many seeds (0, 1, ...) of its `points` give `name` at least the looks of the most-tuned
    other strategy. `done` of this search's trials are already among the looks: the rest are
    looks it had before (earlier searches, other lengths), so a rerun of the same command asks
    for the same seeds."""
    before = looks.get(name, (0, 0))[0] - done
    return max(1, -(-(_most_other(looks, name) - before) // points))


def print_ledger(args) -> int:
    """`tune --ledger`: print the ledger (of one protocol when --dataset/--scenario name it) and write it."""
    from bench import ledger
    from bench.plan import UsageError
    from bench.runner import print_line

    if not (args.results / "tune").is_dir() and not (args.results / "runs").is_dir():
        raise UsageError(f"no records under {args.results}: nothing to count")
    protocols = ledger.current_protocols()
    lines = [line for line in ledger.ledger(args.results, protocols)
             if args.dataset in (None, line.dataset) and args.scenario in (None, line.scenario)]
    print(ledger.markdown(lines, protocols))
    path, _ = ledger.write_ledger(args.results)
    print_line(f"ledger of every protocol written to {path}")
    return 0


def _write_ledger(results: Path) -> None:
    from bench import ledger
    from bench.runner import print_line

    try:
        path, _ = ledger.write_ledger(results)
    except OSError as exc:  # the trials are stored; the ledger is rebuilt from them at any time
        print_line(f"warning: tuning ledger not written ({exc}); python -m bench tune --ledger rebuilds it")
        return
    print_line(f"tuning ledger: {path}")


def _overridden(args, protocol: dict, chosen: list[str]) -> list[str]:
    """The command-line changes to the protocol's settings the trials run under (empty: none)."""
    changes = [f"--set {text}" for text in args.overrides]
    own = protocol.get("strategies", {})
    planned = {own.get(name, {}).get("epochs", protocol.get("epochs")) for name in chosen}
    if args.epochs is not None and planned != {args.epochs}:
        changes.append(f"--epochs {args.epochs}")
    return changes


def _missing_reason(cells: list, elsewhere: set[str]) -> str:
    """Why a point has no score: which seed failed, is held by another run, or has no record."""
    for cell in cells:
        if str(cell.path) in elsewhere:
            return f"seed {cell.config['seed']} running elsewhere"
        try:
            record = json.loads(cell.path.read_text())
        except (OSError, ValueError):
            return f"seed {cell.config['seed']} has no record"
        if record.get("status") != "ok":
            return f"seed {cell.config['seed']} failed: {record.get('error')}"
    return "no score"


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
    return f"{config['strategy']} seed {config['seed']} {show_point(config['params'])}"


def _score_text(record: dict) -> str:
    if record.get("status") != "ok":
        return f"FAILED: {record.get('error')}"
    return f"held-out final accuracy {100 * record['metrics']['final_acc']:.2f}%"
