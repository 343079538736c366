"""`python -m bench prune`: list (and with `--yes` delete) the records that no run will make again.

Two kinds, each named with its reason:
- records of a configuration no protocol plans any more: resolving the record's
  dataset, scenario, strategy and budget with the protocol file as it is now (at
  the protocol's budget, or at 0 for the memory-free rows) gives another
  configuration hash, e.g. after `bench tune` changed a value; `bench run` never
  reruns them (it writes the new configuration under another name), yet tables
  would list them beside the new rows;
- records made by older code than the current one (their code fingerprint
  differs): `bench run` replaces those whose configuration is still planned when
  it reruns them, so deleting them first only loses numbers early.
Only `<results>/runs/` is looked at (tuning trials under `<results>/tune/` are
left alone). Without `--yes` nothing is deleted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def planned_hash(config: dict[str, Any]) -> tuple[str | None, str]:
    """The hash the protocol would give this record's cell now (None when it would not plan it), and why."""
    from bench import config as cfg
    from bench import registry

    try:
        info = registry.get(config["strategy"])
    except KeyError:
        return None, f"no strategy {config['strategy']} any more"
    try:
        protocol = cfg.load_protocol(config["dataset"], config["scenario"])
    except cfg.ConfigError as exc:
        return None, str(exc)
    memory = config.get("memory", 0)
    budgets = [memory] if info.memory != "none" else [protocol["memory"], 0]
    for budget in budgets:
        if budget not in (protocol["memory"], 0):
            return None, f"its budget {budget} is neither the protocol's ({protocol['memory']}) nor 0"
        checked = {**protocol, "memory": budget}
        if info.why_not(config["dataset"], config["scenario"], budget, checked.get("backbone")):
            continue
        try:
            cfg.validate_protocol(checked)
            planned = cfg.resolve(checked, config["dataset"], config["scenario"], config["strategy"],
                                  config["seed"], memory, config.get("holdout", 0.0), schema=info.settings)
        except cfg.ConfigError as exc:
            return None, f"the protocol does not resolve: {exc}"
        planned.update({k: config[k] for k in ("device", "threads") if k in config})  # the run's, not the protocol's
        if cfg.config_hash(planned) == config["hash"]:
            return config["hash"], ""
    return None, "no protocol plans its configuration any more (a setting, epochs or budget differs)"


def why_prune(record: dict[str, Any]) -> str | None:
    """Why this record would be pruned, or None when a run would still count it as done."""
    from bench.summary import current_code

    config = record["config"]
    planned, why = planned_hash(config)
    if planned is None:
        return why
    now = current_code(config["strategy"])
    if record.get("code") != now:
        return f"made by older code (code {record.get('code')}, now {now})"
    return None


def prunable(results: Path) -> list[tuple[Path, str]]:
    """(path, reason) of every usable record under `<results>/runs/` that would be pruned."""
    from bench.records import read_json, validate_record

    found = []
    for path in sorted((results / "runs").glob("**/*.json")):
        record = read_json(path)
        if validate_record(record) is not None:
            continue  # not a record: the tables already name it and leave it out
        reason = why_prune(record)
        if reason:
            found.append((path, reason))
    return found


def cmd_prune(results: Path, delete: bool) -> int:
    import sys

    if not (results / "runs").is_dir():
        from bench.plan import UsageError

        raise UsageError(f"no records: {results / 'runs'} does not exist")
    found = prunable(results)
    for path, reason in found:
        print(f"{'deleted' if delete else 'would delete'} {path}: {reason}")
        if delete:
            path.unlink(missing_ok=True)
    if not found:
        print(f"nothing to prune under {results / 'runs'}", file=sys.stderr)
    elif delete:
        print(f"{len(found)} record(s) deleted; rebuild the tables: python -m bench table --results {results}",
              file=sys.stderr)
    else:
        print(f"{len(found)} record(s) would be deleted; dry run, nothing deleted (--yes deletes them)",
              file=sys.stderr)
    return 0
