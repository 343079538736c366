"""Command line: `python -m bench {run,table,plot,list}`.

Bad input (unknown names, impossible settings, unusable data or results folder)
is reported before any training, with exit code 2. A run whose cells all
succeed exits 0; with failed cells 1; interrupted 130.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
DATASETS = ("mnist", "cifar10", "cifar100", "omniglot")
SCENARIOS = ("class-il", "task-il")


class UsageError(Exception):
    """Bad input; the message says what and how to fix it."""


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


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
    seeds.add_argument("--seeds", type=_count(1), default=None, help="run seeds 0..N-1 (default 1)")
    seeds.add_argument("--seed", type=_count(0), default=None, help="run this one seed")
    run.add_argument("--memory", type=_count(0), default=None,
                     help="replay budget in exemplars (default: the protocol's, 200 class-il, 0 task-il)")
    run.add_argument("--epochs", type=_count(1), default=None, help="epochs per task (default: the protocol's)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a protocol setting, e.g. optimizer.lr=0.01 or strategies.ewc.lambda=100")
    run.add_argument("--holdout", type=_fraction, default=0.0,
                     help="evaluate on this fraction of the training data instead of the test set "
                          "(for choosing settings)")
    run.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT", "./data"),
                     help="folder with the datasets in their official layouts (default: $BENCH_DATA_ROOT, else ./data)")
    run.add_argument("--results", type=Path, default=Path("results"))
    run.add_argument("--jobs", type=_count(1), default=os.cpu_count() or 1,
                     help="cells run in N worker processes at once (default: one per CPU core)")
    run.add_argument("--threads", type=_count(1), default=1,
                     help="torch threads per cell (default 1), the same whatever --jobs is: "
                          "the thread count changes float results, so keep it fixed to reproduce a run")
    run.add_argument("--force", action="store_true", help="rerun cells that already have a record")
    run.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    run.add_argument("--no-download", action="store_true", help="never try to download missing data")
    run.add_argument("--executor", choices=("local", "dask"), default="local",
                     help="local: a process pool on this machine (default); dask: Dask workers, an embedded "
                          "cluster of --jobs workers on 127.0.0.1 unless --scheduler is given")
    run.add_argument("--scheduler", default=None,
                     help="address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786 "
                          "(default: $BENCH_DASK_SCHEDULER; with --executor dask)")
    run.add_argument("--cells-per-gpu", type=_count(1), default=1,
                     help="with --executor dask and --device cuda, each cell asks for 1/K of a GPU resource")

    for name, text in (("table", "rebuild the tables from stored records"),
                       ("plot", "draw accuracy curves and accuracy-matrix heatmaps from stored records")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--results", type=Path, default=Path("results"))
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
        if args.command == "table":
            return cmd_table(args.results)
        if args.command == "plot":
            return cmd_plot(args.results)
        return cmd_list()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def plan(args) -> tuple[list, list[tuple[str, str]]]:
    """The cells to run (records not yet there) and the strategies skipped with their reasons.

    Loads the dataset once, so missing or broken data stops the run before any training.
    """
    from bench import config as cfg
    from bench import registry
    from bench import models
    from bench.datasets import DataError, load_dataset
    from bench.runner import Cell, check_writable, finished_ok, record_path
    from bench.scenarios import task_split

    known = registry.strategies()
    named = [s.strip() for s in args.strategies.split(",") if s.strip()] if args.strategies else None
    unknown = [s for s in named or [] if s not in known]
    if unknown:
        raise UsageError(f"unknown strategy {', '.join(unknown)}; valid: {', '.join(known)}")
    try:
        protocol = cfg.apply_overrides(cfg.load_protocol(args.dataset, args.scenario), args.overrides)
        if args.epochs is not None:
            protocol["epochs"] = args.epochs
        if args.memory is not None:
            protocol["memory"] = args.memory
        cfg.validate_protocol(protocol)
    except cfg.ConfigError as exc:
        raise UsageError(str(exc)) from None
    memory = protocol["memory"]
    for text in args.overrides:  # a misspelt strategy section would otherwise be ignored silently
        path = cfg.parse_override(text)[0]
        if path[0] == "strategies" and len(path) > 1 and path[1] not in known:
            raise UsageError(f"--set {text}: unknown strategy {path[1]}; valid: {', '.join(known)}")
    for name in protocol.get("strategies", {}):  # every section, also of strategies not run now
        if name not in known:
            raise UsageError(f"protocol {args.dataset}-{args.scenario}: unknown strategy section "
                             f"[strategies.{name}]; valid: {', '.join(known)}")
        try:
            cfg.resolve(protocol, args.dataset, args.scenario, name, 0, 0, schema=known[name].settings)
        except cfg.ConfigError as exc:
            raise UsageError(str(exc)) from None
    backbones = [*models.BACKBONES, "resnet18"]
    if protocol["backbone"] not in backbones:
        raise UsageError(f"unknown backbone {protocol['backbone']!r}; valid: {', '.join(backbones)}")

    try:
        data = load_dataset(args.dataset, args.data_root, download=not args.no_download)
    except (DataError, OSError) as exc:
        raise UsageError(str(exc)) from None
    _check_shape(data, args.dataset, args.data_root)
    n_classes = task_split(data).n_classes
    try:
        check_writable(args.results)
    except OSError as exc:
        raise UsageError(f"cannot write records under {args.results}: {exc}") from None

    seeds = [args.seed] if args.seed is not None else list(range(args.seeds or 1))
    cells, skipped = [], []
    for name in named or list(known):
        info = known[name]
        reason = info.why_not(args.dataset, args.scenario, memory, protocol.get("backbone"))
        if reason:
            if named:
                raise UsageError(f"{name} cannot run {args.dataset} {args.scenario}: {reason}")
            skipped.append((name, reason))
            continue
        problem = info.invalid(memory, n_classes)
        if problem:
            raise UsageError(problem)
        used = memory if info.memory in ("shared", "own") else 0
        for seed in seeds:
            config = cfg.resolve(protocol, args.dataset, args.scenario, name, seed, used, args.holdout,
                                 schema=info.settings)
            config["hash"] = cfg.config_hash(config)
            path = record_path(args.results, config)
            cells.append((Cell(config, path), finished_ok(path, config["hash"]) and not args.force))
    return cells, skipped


def _check_shape(data, dataset: str, root: str) -> None:
    """Images of the shape the dataset's networks take, so that wrong files stop the run, not its cells."""
    from bench import models

    expected = models.BACKBONES[models.DEFAULT_BACKBONE[dataset]].in_shape
    for part, x in (("training", data.x_train), ("test", data.x_test)):
        if tuple(x.shape[1:]) != tuple(expected) or len(x) == 0:
            files = ", ".join(sorted(data.checksums)) or "none"
            found = "no images" if len(x) == 0 else f"images of shape {tuple(x.shape[1:])}"
            raise UsageError(f"{dataset} under {root}: {part} set has {found}, expected {tuple(expected)} "
                             f"(channels, height, width); files read: {files}")


def cmd_run(args, argv: list[str]) -> int:
    from bench.runner import print_line, run_cells

    if args.executor == "local" and args.scheduler:
        raise UsageError("--scheduler needs --executor dask")
    planned, skipped = plan(args)
    for name, reason in skipped:
        print_line(f"skip {name}: {reason}")
    done = [cell for cell, exists in planned if exists]
    todo = [cell for cell, exists in planned if not exists]
    for cell in done:
        print_line(f"already done: {cell.label} ({cell.path})")
    total = len(todo)
    counter = iter(range(1, total + 1))

    def on_done(cell, record):
        n = next(counter)
        if record["status"] == "ok":
            m = record["metrics"]
            forget = "" if m["forgetting"] is None else f", forgetting {100 * m['forgetting']:.1f}%"
            print_line(f"[{n}/{total}] {cell.label}: final accuracy {100 * m['final_acc']:.1f}%{forget}"
                       f" ({record['time_s']:.0f} s)")
        else:
            print_line(f"[{n}/{total}] {cell.label}: FAILED: {record['error']} ({cell.path})")

    command = "python -m bench " + shlex.join(argv)
    if args.executor == "dask":
        outcome = _run_dask(todo, args, command, on_done)
    else:
        outcome = run_cells(todo, args.data_root, jobs=args.jobs, device=args.device,
                            command=command, on_done=on_done, threads=args.threads)
    print_line(f"finished: {len(outcome.ok)} ok, {len(outcome.failed)} failed, {len(done)} already done, "
               f"{len(skipped)} skipped, {len(outcome.not_run)} not run")
    if outcome.interrupted:
        for cell in outcome.not_run:
            print_line(f"not run (interrupted): {cell.label}")
        print_line("interrupted: run the same command again to finish the remaining cells")
        return EXIT_INTERRUPTED
    _write_tables(args.results, show=(args.dataset, args.scenario))
    return EXIT_FAILED if outcome.failed else 0


def _run_dask(todo, args, command: str, on_done):
    from bench import dask_executor

    try:
        return dask_executor.run_cells(todo, args.data_root, jobs=args.jobs, device=args.device, command=command,
                                       on_done=on_done, threads=args.threads,
                                       scheduler=args.scheduler or os.environ.get("BENCH_DASK_SCHEDULER") or None,
                                       cells_per_gpu=args.cells_per_gpu)
    except dask_executor.SchedulerUnreachable as exc:
        raise UsageError(str(exc)) from None


def _write_tables(results: Path, show: tuple[str, str] | None = None) -> None:
    from bench import report

    records, _ = report.load_records(results)
    report.write_tables(results, records)
    frame = report.summary_frame(records)
    if show is not None and len(frame):
        frame = frame[(frame["dataset"] == show[0]) & (frame["scenario"] == show[1])]
    if len(frame):
        print(report.markdown_table(frame))


def cmd_table(results: Path) -> int:
    if not (results / "runs").is_dir():
        raise UsageError(f"no records: {results / 'runs'} does not exist")
    _write_tables(results)
    print(f"tables written under {results / 'tables'}", file=sys.stderr)
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
    known = registry.strategies()
    for name, info in known.items():
        print(f"  {name:<8} [{info.memory}] {info.summary}")
    print("\nwhere each applies (protocol memory budgets):")
    from bench import config as cfg

    for dataset in DATASETS:
        for scenario in SCENARIOS:
            protocol = cfg.load_protocol(dataset, scenario)
            runs, skips = [], []
            for name, info in known.items():
                reason = info.why_not(dataset, scenario, protocol["memory"], protocol["backbone"])
                (skips.append(f"{name} ({reason})") if reason else runs.append(name))
            print(f"  {dataset} {scenario} (memory {protocol['memory']}): {', '.join(runs)}")
            for skip in skips:
                print(f"      skipped: {skip}")
    return 0
