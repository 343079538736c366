"""Command line: `python -m bench {run,tune,table,plot,prune,list}`.

Bad input (unknown names, impossible settings, unusable data or results folder)
is reported before any training, with exit code 2. A run whose cells all
succeed exits 0; with failed cells, or cells left not run (records that could not be
written, a Dask scheduler lost), 1; interrupted 130.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from bench.executors import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, add_executor_arguments, check_executor, count, execute)
from bench.plan import UsageError, plan  # noqa: F401  (plan: the tests call it here)
DATASETS = ("mnist", "cifar10", "cifar100", "omniglot")
SCENARIOS = ("class-il", "task-il")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate cells, write records and tables")
    run.add_argument("--scenario", required=True, choices=SCENARIOS)
    run.add_argument("--dataset", default="mnist", choices=DATASETS)
    run.add_argument("--strategies", default=None,
                     help="comma-separated names (default: every strategy that applies)")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=count(1), default=None, help="run seeds 0..N-1 (default 1)")
    seeds.add_argument("--seed", type=count(0), default=None, help="run this one seed")
    run.add_argument("--memory", type=count(0), default=None,
                     help="replay budget in exemplars (default: the protocol's, 200 class-il, 0 task-il)")
    run.add_argument("--epochs", type=count(1), default=None, help="epochs per task (default: the protocol's)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a protocol setting, e.g. optimizer.lr=0.01 or strategies.ewc.lambda=100")
    run.add_argument("--holdout", type=_fraction, default=0.0,
                     help="evaluate on this fraction of the training data instead of the test set "
                          "(for choosing settings)")
    run.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT", "./data"),
                     help="folder with the datasets in their official layouts (default: $BENCH_DATA_ROOT, else ./data)")
    run.add_argument("--results", type=Path, default=Path("results"))
    run.add_argument("--jobs", type=count(1), default=os.cpu_count() or 1,
                     help="cells run in N worker processes at once (default: one per CPU core)")
    run.add_argument("--threads", type=count(1), default=1,
                     help="torch threads per cell (default 1), the same whatever --jobs is: "
                          "the thread count changes float results, so keep it fixed to reproduce a run")
    run.add_argument("--force", action="store_true",
                     help="rerun cells that already have a record; a replaced ok record is kept as RECORD.json.prev")
    run.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    run.add_argument("--no-download", action="store_true", help="never try to download missing data")
    run.add_argument("--log", default=None, metavar="NAMES",
                     help="Avalanche loggers for the cells this run trains, any of tensorboard,csv,wandb,text "
                          "(comma-separated; W&B offline unless configured); written to <results>/logs/<record>/")
    add_executor_arguments(run)

    from bench.tune import add_parser

    add_executor_arguments(add_parser(sub, count, _fraction, DATASETS, SCENARIOS))

    for name, text in (("table", "rebuild the tables from stored records"),
                       ("plot", "draw accuracy and learning curves and accuracy-matrix heatmaps from stored records")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--results", type=Path, default=Path("results"))
        if name == "table":
            p.add_argument("--readme", type=Path, nargs="*", metavar="PAGE",
                           help="also rewrite these pages' <!-- bench:table NAME --> blocks from the tables "
                                "(no PAGE: README.md and docs/results.md)")
    prune = sub.add_parser("prune", help="list records no protocol plans any more or made by older code "
                                         "(dry run; --yes deletes them)")
    prune.add_argument("--results", type=Path, default=Path("results"))
    prune.add_argument("--yes", action="store_true", help="delete the records listed")
    sub.add_parser("list", help="datasets, scenarios, strategies and where each applies")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or --help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "run":
            return cmd_run(args, argv if argv is not None else sys.argv[1:])
        if args.command == "tune":
            from bench.tune import cmd_tune

            return cmd_tune(args, argv if argv is not None else sys.argv[1:])
        if args.command == "table":
            return cmd_table(args.results, args.readme)
        if args.command == "plot":
            return cmd_plot(args.results)
        if args.command == "prune":
            from bench.prune import cmd_prune

            return cmd_prune(args.results, args.yes)
        return cmd_list()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def check_log_executor(log: tuple[str, ...], executor: str, shared_results: bool) -> None:
    """Refuse --log where the loggers' files would be lost: an executor whose workers write
    to a results folder this process does not see (call before training)."""
    if log and executor != "local" and not shared_results:
        raise UsageError(f"--log needs the workers to write into {executor}'s shared results folder; "
                         f"its workers do not share it: run without --log, or with the local executor")


def cmd_run(args, argv: list[str]) -> int:
    from bench import claims, loggers
    from bench.runner import print_line

    try:
        log = loggers.parse(args.log)
    except loggers.LogError as exc:
        raise UsageError(str(exc)) from None
    scheduler = check_executor(args)
    # an embedded cluster's workers run on this machine and write the logs where this process can see them
    check_log_executor(log, args.executor, shared_results=scheduler is None)
    planned, skipped = plan(args)
    for name, reason in skipped:
        print_line(f"skip {name}: {reason}")
    from bench.display import ordered
    from bench.plan import untuned

    for line in untuned(args, ordered({cell.config["strategy"] for cell, _ in planned})):
        print_line(line)
    done = [cell for cell, exists in planned if exists]
    todo = [cell for cell, exists in planned if not exists]
    for cell in done:
        print_line(f"already done: {cell.label} ({cell.path})")
        claims.clear_stale(cell.path)
    if log and done:  # the loggers watch training; a finished cell is not trained again for them
        print_line(f"--log: no logs for the {len(done)} cell(s) already done (nothing trained); "
                   f"--force retrains them with logs")
    if log and todo:
        try:
            loggers.check_ready(log, args.results / "logs")
        except loggers.LogError as exc:
            raise UsageError(str(exc)) from None
    for cell in todo:
        cell.log = log
    total = len(todo)
    counter = iter(range(1, total + 1))

    def on_done(cell, record):
        n = next(counter)
        if record["status"] == "ok":
            m = record["metrics"]
            forget = "" if m["forgetting"] is None else f", forgetting {100 * m['forgetting']:.1f}%"
            replaced = f"; replaced {cell.path}, {record['replaced']}" if record.get("replaced") else ""
            print_line(f"[{n}/{total}] {cell.label}: final accuracy {100 * m['final_acc']:.1f}%{forget}"
                       f" ({record['time_s']:.0f} s){replaced}")
            for failure in record.get("logs_missing") or []:
                print_line(f"  warning: its logs are incomplete ({failure}); the result is stored")
        else:
            kept = f"; {record['not_stored']}" if record.get("not_stored") else ""
            print_line(f"[{n}/{total}] {cell.label}: FAILED: {record['error']} ({cell.path}){kept}")

    def on_skip(cell, why):
        print_line(f"[{next(counter)}/{total}] {cell.label}: skipped, {why}")

    command = "python -m bench " + shlex.join(argv)
    outcome = execute(todo, args, command, on_done=on_done, on_skip=on_skip)
    print_line(f"finished: {len(outcome.ok)} ok, {len(outcome.failed)} failed, "
               f"{len(done) + len(outcome.done_elsewhere)} already done, "
               f"{len(skipped)} skipped, {len(outcome.not_run)} not run, {len(outcome.elsewhere)} running elsewhere")
    if outcome.interrupted:
        for cell in outcome.not_run:
            print_line(f"not run (interrupted): {cell.label}")
        print_line("interrupted: run the same command again to finish the remaining cells")
        return EXIT_INTERRUPTED
    if outcome.store_failed:
        print_line(f"error: {outcome.store_failed}")
        for cell in outcome.not_run:
            print_line(f"not run (its record could not be written): {cell.label}")
        print_line(f"the records already stored are kept; free space under {args.results} and run the same "
                   "command again to finish the remaining cells")
        return EXIT_FAILED
    for cell in outcome.not_run:
        print_line(f"not run (lost with the Dask scheduler): {cell.label}")
    if outcome.elsewhere:
        print_line("cells running elsewhere are left to the run that claimed them; "
                   "run the same command again once it has ended to pick up any it did not finish")
    try:
        _write_tables(args.results, show=(args.dataset, args.scenario))
    except OSError as exc:  # the records are stored; only the tables could not be rebuilt
        print_line(f"error: cannot write tables under {args.results / 'tables'}: {exc}; "
                   f"the records are stored, rebuild with: python -m bench table --results {args.results}")
        return EXIT_FAILED
    return EXIT_FAILED if outcome.failed or outcome.not_run else 0


def _write_tables(results: Path, show: tuple[str, str] | None = None) -> None:
    from bench import report

    from bench.overview import write_overview

    records, _ = report.load_records(results)
    report.write_tables(results, records)
    frame = report.summary_frame(records)
    write_overview(results, frame, report.seed_frame(records))
    if show is not None and len(frame):
        frame = frame[(frame["dataset"] == show[0]) & (frame["scenario"] == show[1])]
    if len(frame):
        print(report.terminal_table(frame))


def cmd_table(results: Path, readme: Path | list[Path] | None = None) -> int:
    from bench import readme as readme_blocks

    pages = None if readme is None else [readme] if isinstance(readme, Path) else list(readme or readme_blocks.PAGES)
    if not (results / "runs").is_dir():
        raise UsageError(f"no records: {results / 'runs'} does not exist")
    for page in pages or []:
        if not page.is_file():
            raise UsageError(f"--readme: {page} is not a file")
    _write_tables(results)
    print(f"tables written under {results / 'tables'}", file=sys.stderr)
    if pages:
        try:
            unplaced = readme_blocks.update_pages(pages, results / "tables")
        except readme_blocks.ReadmeError as exc:
            raise UsageError(str(exc)) from None
        shown = ", ".join(map(str, pages))
        print(f"{shown}: result tables rewritten from {results / 'tables'}", file=sys.stderr)
        for name in unplaced:
            print(f"warning: table {name} has no block in {shown}; add <!-- bench:table {name} --> "
                  "<!-- /bench:table --> where it belongs", file=sys.stderr)
    return 0


def cmd_plot(results: Path) -> int:
    from bench import report

    if not (results / "runs").is_dir():
        raise UsageError(f"no records: {results / 'runs'} does not exist")
    for path in report.write_plots(results):
        print(path)
    return 0


def cmd_list() -> int:
    from bench import registry

    print("datasets:  " + ", ".join(DATASETS))
    print("scenarios: " + ", ".join(SCENARIOS))
    print("\nstrategies (memory: shared = the matched replay buffer, own = its own of the same size):")
    from bench.display import ordered

    known = {name: registry.get(name) for name in ordered(registry.strategies())}
    for name, info in known.items():
        print(f"  {name:<10} [{info.memory}] {info.summary}")
    print("  not implemented: the reference's \"Adaptive Network\" and \"Activation Regularization\" baselines,"
          " which it names with one line each and no citation, so neither can be reproduced (see docs/methods.md)")
    print("\nwhere each applies (protocol memory budgets):")
    from bench import config as cfg

    for dataset in DATASETS:
        for scenario in SCENARIOS:
            try:
                protocol = cfg.load_protocol(dataset, scenario)
            except cfg.ConfigError as exc:
                raise UsageError(str(exc)) from None
            runs, skips = [], []
            for name, info in known.items():
                reason = info.why_not(dataset, scenario, protocol["memory"], protocol["backbone"])
                (skips.append(f"{name} ({reason})") if reason else runs.append(name))
            print(f"  {dataset} {scenario} (memory {protocol['memory']}): {', '.join(runs)}")
            for skip in skips:
                print(f"      skipped: {skip}")
    return 0
