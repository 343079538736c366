"""What a `run` (or `tune`) will train: every setting and the data checked before any training.

`plan` resolves each cell's configuration from the protocol, the strategy's
declared settings and the command line, finds which cells are already done
(their identity: configuration, code, device, threads), and, when something must
run, loads the data once to check it. Every problem is a `UsageError` (exit 2).
"""
from __future__ import annotations


class UsageError(Exception):
    """Bad input; the message says what and how to fix it."""


def plan(args) -> tuple[list, list[tuple[str, str]]]:
    """The cells to run (records not yet there) and the strategies skipped with their reasons.

    Every setting is checked first. When some cell must run, the dataset is loaded
    once, so missing or broken data stops the run before any training; when every
    cell is already done, the data is not needed and not read.
    """
    from bench import config as cfg
    from bench import registry
    from bench import models
    from bench.provenance import code_fingerprint
    from bench.display import ordered
    from bench.records import identity
    from bench.runner import Cell, check_writable, finished_ok, record_path

    known = registry.strategies()
    named = _strategy_list(args.strategies, known)
    device = check_device(args.device)
    protocol = run_protocol(args)
    memory = protocol["memory"]
    for text in args.overrides:  # a misspelt strategy section would otherwise be ignored silently
        path = cfg.parse_override(text)[0]
        if path[0] == "strategies" and len(path) > 1 and path[1] not in known:
            raise UsageError(f"--set {text}: unknown strategy {path[1]}; valid: {', '.join(known)}")
    sections = [("strategies", n) for n in protocol.get("strategies", {})] \
        + [("memory0", n) for n in protocol.get("memory0", {})]
    for where, name in sections:  # every section, also of strategies not run now
        section = f"protocol {args.dataset}-{args.scenario} ({cfg.protocol_path(args.dataset, args.scenario)}), " \
                  f"section [{where}.{name}]" + ("" if named is None or name in named else
                                                 f" (of {name}, not run now: every section is checked)")
        if name not in known:
            raise UsageError(f"{section}: unknown strategy {name}; valid: {', '.join(known)}")
        try:
            checked = {**protocol, "memory": 0} if where == "memory0" else protocol  # as resolve overlays it
            config = cfg.resolve(checked, args.dataset, args.scenario, name, 0, 0, schema=known[name].settings,
                                 source=known[name].source)
        except cfg.ConfigError as exc:
            raise UsageError(f"{section}: {exc}") from None
        problem = known[name].conflict(config["params"])
        if problem:
            raise UsageError(f"{section}: {problem}")
    problem = models.unusable(args.dataset, protocol["backbone"])
    if problem:
        raise UsageError(problem)
    try:
        check_writable(args.results)
    except OSError as exc:
        raise UsageError(f"cannot write records under {args.results}: {exc}") from None

    seeds = [args.seed] if args.seed is not None else list(range(args.seeds or 1))
    # Device and threads change results, so they are part of a record's identity. They enter the
    # configuration (hence the record's name) only when not the defaults, so that records made
    # before they did keep their names; those records store both, and `done` checks them.
    runtime = {**({"device": device} if device != "cpu" else {}),
               **({"threads": args.threads} if args.threads != 1 else {})}
    cells, skipped, runnable = [], [], []
    for name in named or ordered(known):
        info = known[name]
        reason = info.why_not(args.dataset, args.scenario, memory, protocol.get("backbone"))
        if reason:
            if named:
                raise UsageError(f"{name} cannot run {args.dataset} {args.scenario}: {reason}")
            skipped.append((name, reason))
            continue
        runnable.append(info)
        used = memory if info.memory in ("shared", "own") else 0
        code = code_fingerprint(info.module.__name__)
        for seed in seeds:
            config = cfg.resolve(protocol, args.dataset, args.scenario, name, seed, used, args.holdout,
                                 schema=info.settings, source=info.source)
            config.update(runtime)
            config["hash"] = cfg.config_hash(config)
            path = record_path(args.results, config)
            done = not args.force and finished_ok(path, identity(config, code, device, args.threads))
            cells.append((Cell(config, path, code=code), done))
    if all(done for _, done in cells):
        return cells, skipped  # nothing to train: the data is not needed (a fresh clone offline still reports)
    _check_data(args, runnable, memory)
    return cells, skipped


def run_protocol(args) -> dict:
    """The protocol as this run sees it: the file, then --set, --epochs and --memory; checked."""
    from bench import config as cfg

    try:
        protocol = cfg.apply_overrides(cfg.load_protocol(args.dataset, args.scenario), args.overrides)
        if args.epochs is not None:
            protocol["epochs"] = args.epochs
        if args.memory is not None:
            protocol["memory"] = args.memory
        cfg.validate_protocol(protocol)
    except cfg.ConfigError as exc:
        raise UsageError(str(exc)) from None
    return protocol


def untuned(args, names) -> list[str]:
    """Lines for the strategies among `names` that run on their declared defaults: they have settings,
    and the protocol has no section for them, so nothing was chosen for this protocol."""
    from bench import config as cfg
    from bench import registry

    from bench.display import UNTUNED_MARK

    protocol = run_protocol(args)
    lines = []
    for name in names:
        info = registry.get(name)
        if info.settings and not cfg.has_section(protocol, name):
            values = ", ".join(f"{k}={v.default}" for k, v in info.settings.items())
            lines.append(f"note: {name} runs {args.dataset} {args.scenario} on its declared defaults ({values}): "
                         f"{cfg.protocol_path(args.dataset, args.scenario)} has no [strategies.{name}] section"
                         f"{f' (nor [memory0.{name}])' if protocol['memory'] == 0 else ''}, so nothing was tuned "
                         f"for this protocol; tables mark such rows {UNTUNED_MARK}")
    return lines



def _strategy_list(text: str | None, known: dict) -> list[str] | None:
    """The strategies named by --strategies (None: all); an empty, unknown or repeated name is an error."""
    if text is None:
        return None
    named = [s.strip() for s in text.split(",")]
    if not any(named):
        raise UsageError(f"--strategies is empty ({text!r}); name at least one of {', '.join(known)}, "
                         "or leave the option out to run every strategy")
    if "" in named:
        raise UsageError(f"--strategies {text!r} has an empty name; separate names by single commas")
    unknown = [s for s in named if s not in known]
    if unknown:
        raise UsageError(f"unknown strategy {', '.join(unknown)}; valid: {', '.join(known)}")
    repeated = sorted({s for s in named if named.count(s) > 1})
    if repeated:
        raise UsageError(f"--strategies names {', '.join(repeated)} more than once")
    return named


def check_device(text: str) -> str:
    """The torch device `text` names, checked to exist here; UsageError otherwise."""
    if text == "cpu":
        return text  # no torch import for the common case
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--device {text!r} is not a device ({exc}); use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {text}: no CUDA device is available on this machine; use --device cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {text}: MPS is not available on this machine; use --device cpu")
    elif device.type != "cpu":
        raise UsageError(f"--device {text}: only cpu, cuda and mps devices are supported")
    return str(device)


def _check_data(args, strategies: list, memory: int) -> None:
    """Load the dataset once and check what the cells will need from it; UsageError when unusable."""
    from bench.datasets import DataError, load_dataset
    from bench.scenarios import task_split

    try:
        data = load_dataset(args.dataset, args.data_root, download=not args.no_download)
    except (DataError, OSError) as exc:
        raise UsageError(str(exc)) from None
    _check_shape(data, args.dataset, args.data_root)
    _check_classes(data, args.dataset, args.data_root)
    if getattr(args, "holdout", 0.0):
        from bench.scenarios import holdout_problem

        problem = holdout_problem(data, args.holdout)
        if problem:
            raise UsageError(f"{args.dataset} under {args.data_root}: {problem}")
    n_classes = task_split(data).n_classes
    for info in strategies:
        problem = info.invalid(memory, n_classes)
        if problem:
            raise UsageError(problem)


def _check_classes(data, dataset: str, root: str) -> None:
    """Every class has training and test images (an empty folder or label would fail inside a cell)."""
    import torch

    for part, y in (("training", data.y_train), ("test", data.y_test)):
        counts = torch.bincount(y, minlength=data.n_classes)[: data.n_classes]
        empty = [data.class_names[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
        if empty:
            shown = ", ".join(map(str, empty[:5])) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            raise UsageError(f"{dataset} under {root}: {len(empty)} class(es) have no {part} images: {shown}")


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
