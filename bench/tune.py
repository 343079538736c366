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
at once do not lose each other's winners) and is atomic (bench/files.py).
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
`<results>/tables/`; `python -m bench tune --ledger` prints it.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import random
import shlex
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEFAULT_BUDGET = 8
FLAT_POINTS = 0.5  # max - min held-out accuracy (in points) under which a grid is called flat


class EditError(ValueError):
    """The protocol's section is in a form the write-back does not edit."""


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
    from bench import cli, registry
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
    base, _ = plan(plan_args)  # every check of `run`, and the data loaded once
    overridden = _overridden(args, protocol, chosen)
    write = not args.no_write and (not overridden or args.write_overridden)
    if write:
        _check_write_back(args, memory, {name: trial_points(spaces[name], 1, 0)[0] for name in chosen})
    elif not args.no_write:
        print_line(f"the winners will not be written: the trials run under {', '.join(overridden)}, not the "
                   f"protocol's settings (--write-overridden writes them, with a comment saying so)")

    print_line(f"tuning {args.dataset} {args.scenario} at memory {memory}: budget {budget} trials per "
               f"strategy, scored on {args.holdout:g} of the training data held out")
    trials: dict[str, list[tuple[dict, list[Cell]]]] = {}
    todo, done, refused = [], 0, 0
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
                cells.append(Cell(config, record_path(plan_args.results, config), code=cell.code))
            problem = known[name].conflict(cells[0].config["params"]) if cells else None
            if problem:  # `run` would refuse these values together: not a trial, nothing to win
                print_line(f"  not run: {name} {_show(point)}: `run` refuses it: {problem}")
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
    cli.check_executor(args)
    elsewhere: set[str] = set()

    def on_skip(cell, why):
        elsewhere.add(str(cell.path))
        print_line(f"  trial {_describe(cell.config)}: not run here, {why}")

    outcome = cli.execute(todo, args, "python -m bench " + shlex.join(argv),
                          on_done=lambda cell, rec: print_line(f"  trial {_describe(cell.config)}: {_score_text(rec)}"),
                          on_skip=on_skip)
    if outcome.interrupted:
        print_line("interrupted: run the same command again to finish the remaining trials")
        return cli.EXIT_INTERRUPTED

    command = "python -m bench " + shlex.join(argv)
    failed = False
    for name, scored in trials.items():
        scores, missing = [], []
        for point, cells in scored:
            score = _mean_score(cells)
            why = None if score is not None else _missing_reason(cells, elsewhere)
            text = f"{100 * score:.2f}%" if score is not None else why
            print(f"{args.dataset} {args.scenario} {name} {_show(point)}: held-out final accuracy {text}")
            if score is None:
                missing.append(f"{_show(point)} ({why})")
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
        print(f"{args.dataset} {args.scenario} {name}: best {_show(best)} ({100 * best_score:.2f}%)")
        if flat:
            print_line(f"warning: {name}: flat grid: all {len(scores)} trials within {spread:.2f} points "
                       f"(under {FLAT_POINTS}); the setting may have no effect, the best point is not a choice")
        if write:
            _write_choice(args, memory, name, best, best_score, command,
                          overridden=overridden, flat=(spread, len(scores)) if flat else None)
    _write_ledger(args.results)
    return cli.EXIT_FAILED if failed or outcome.failed else 0


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
    return f"{config['strategy']} seed {config['seed']} {_show(config['params'])}"


def _score_text(record: dict) -> str:
    if record.get("status") != "ok":
        return f"FAILED: {record.get('error')}"
    return f"held-out final accuracy {100 * record['metrics']['final_acc']:.2f}%"


def _show(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _destination(protocol_memory: Any, memory: int) -> str | None:
    """The protocol section a winner at `memory` goes into (None: this protocol runs no such row)."""
    if memory == protocol_memory:
        return "strategies"
    return "memory0" if memory == 0 else None


def edit_protocol(text: str, where: str, name: str, values: dict[str, Any], comment: str,
                  tuned: bool = True) -> str:
    """`text` with `values` set in `[where.name]`, each with `comment`, and the keys added to (or, when
    not `tuned`, removed from) its `tuned` list; the file's other text stays as it was.

    Raises EditError when the section is in a form this does not edit (inline table, dotted keys)
    or when the result would not read back as exactly the intended change."""
    import tomlkit
    from tomlkit.items import InlineTable, Table

    # TOML has no null: the word "none" unsets an optional setting (strategies/ib, rate = "none")
    values = {key: "none" if value is None else value for key, value in values.items()}
    label = f"[{where}.{name}]"
    try:
        before = tomllib.loads(text)
        document = tomlkit.parse(text)
        if isinstance(document.get(where), InlineTable):
            raise EditError(f"{where} is written as an inline table; write {label} as a table of its own")
        appended = where not in document or name not in document[where]
        if appended:  # a new section goes at the end: tomlkit cannot add into tables written out of order
            document = tomlkit.document()
            document.add(where, tomlkit.table(is_super_table=True))
            document[where].add(name, tomlkit.table())
        section = document[where][name]
        if isinstance(section, InlineTable) or not isinstance(section, Table) or section.is_super_table():
            raise EditError(f"{label} is written as an inline table ({name} = {{ ... }}) or with dotted keys; "
                            f"write it as a table: a line {label} followed by one KEY = VALUE per line")
        for key, value in values.items():
            section[key] = value
            section.item(key).comment(comment)
        keys = set(section.get("tuned", []))
        keys = keys | set(values) if tuned else keys - set(values)
        if keys or "tuned" in section:
            section["tuned"] = sorted(keys)
        new = text.rstrip("\n") + "\n\n" + tomlkit.dumps(document) if appended else tomlkit.dumps(document)
        after = tomllib.loads(new)
    except EditError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to edit is a form this cannot edit
        raise EditError(f"cannot edit {label}: {type(exc).__name__}: {exc}") from None
    expected = copy.deepcopy(before)
    own = expected.setdefault(where, {}).setdefault(name, {})
    own.update(values)
    if keys or "tuned" in own:
        own["tuned"] = sorted(keys)
    if after != expected:
        raise EditError(f"rewriting {label} would change more than its values (a form tomlkit cannot edit "
                        f"safely); write it as a table: a line {label} followed by one KEY = VALUE per line")
    return new


def _check_write_back(args, memory: int, samples: dict[str, dict]) -> None:
    """Exit 2 before any trial when the winners could not be written: the protocol file cannot be
    replaced, or a section is in a form `edit_protocol` refuses (tried on the text, not the file)."""
    from bench import config as cfg
    from bench.files import check_rewritable
    from bench.plan import UsageError

    path = cfg.protocol_path(args.dataset, args.scenario)
    try:
        check_rewritable(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the winners into {path}: {exc}; make it writable or tune with "
                         f"--no-write") from None
    where = _destination(tomllib.loads(text).get("memory"), memory)
    if where is None:
        return  # reported as not written at the end, as before
    for name, point in samples.items():
        try:
            edit_protocol(text, where, name, point, "check")
        except EditError as exc:
            raise UsageError(f"{path}: {exc} (or tune with --no-write)") from None


def _write_choice(args, memory: int, name: str, best: dict, score: float, command: str,
                  overridden: list[str] = (), flat: tuple[float, int] | None = None) -> None:
    """Write the chosen values where the next `run` at this memory reads them, keeping the file's comments.

    The read-modify-write holds the protocol's lock, so two tunes at once keep both winners."""
    from bench import config as cfg
    from bench.files import atomic_write, locked
    from bench.runner import print_line

    path = cfg.protocol_path(args.dataset, args.scenario)
    date = datetime.now(timezone.utc).date().isoformat()
    under = f" under {', '.join(overridden)} (not the protocol's settings)" if overridden else ""
    if flat is None:
        comment = f"tuned {date}{under}: held-out final accuracy {100 * score:.2f}% by `{command}`"
    else:
        spread, count = flat
        comment = (f"flat grid {date}{under}: all {count} trials within {spread:.2f} points (best "
                   f"{100 * score:.2f}% held out) by `{command}`: the setting may have no effect; not a choice")
    with locked(path):
        text = path.read_text(encoding="utf-8")
        try:
            runs = tomllib.loads(text).get("memory")
        except tomllib.TOMLDecodeError as exc:  # edited by hand since the tune started
            print_line(f"not written: {path} is not valid TOML now: {exc}")
            return
        where = _destination(runs, memory)
        if where is None:
            print_line(f"not written: tuned at memory {memory}, the protocol runs {runs}")
            return
        try:
            new = edit_protocol(text, where, name, best, comment, tuned=flat is None)
        except EditError as exc:
            print_line(f"not written: {path}: {exc}")
            return
        atomic_write(path, new)
    print_line(f"written to {path} [{where}.{name}]: {_show(best)}" + (" (flat grid: not marked tuned)" if flat else ""))
