"""Run records on disk: where a record lives, how it is written, and the one rule for a usable record.

`validate_record` is the single validity rule: `run` counts a cell as done only
when its record passes it (and matches the cell's identity, `is_done`), and
`table` and `plot` use exactly the records that pass it, naming the others.
`store_record` is how the main process puts a result in place, whatever ran the
cell: it never lets a failed attempt replace an ok record, nor overwrites an ok
record of the same identity that another run made meanwhile.

No torch, no pandas here: the CLI and the reports import this cheaply.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

METRICS = ("final_acc", "avg_inc_acc", "forgetting", "bwt")
SEED_LIMIT = 2**32  # numpy's seeds are below it: a record with a larger seed was never trained
COSTS = ("time_s", "cpu_s", "peak_rss_mb", "params", "extra_state_bytes")
PER_TASK_LISTS = ("active", "widths", "grown", "capped")  # per hidden layer, in a `per_task` entry
REQUIRED_CONFIG = ("dataset", "scenario", "strategy", "seed", "hash")


def record_path(results: Path, config: dict[str, Any]) -> Path:
    c = config
    return results / "runs" / f"{c['dataset']}_{c['scenario']}_{c['strategy']}_seed{c['seed']}_{c['hash']}.json"


def tmp_path(path: Path, tag: str) -> Path:
    """The temporary file a record is written to before it is renamed to `path`."""
    return path.parent / f".{path.name}.{tag}.tmp"


def write_json_atomic(path: Path, data: dict[str, Any], tag: str | None = None) -> None:
    """Write `data` to `tmp_path(path, tag)`, sync it, then rename it over `path`.

    A reader sees either the old file or the whole new one, never a part. The
    file gets the usual permissions (0666 less the umask), like any other output.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path, tag or uuid.uuid4().hex)
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing, unreadable or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_number(value: Any) -> bool:
    # bool is an int subclass, but True is never a valid accuracy; numpy numbers come from in-memory records
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):
        return False
    return isinstance(value, (int, float)) or type(value).__module__ == "numpy" and hasattr(value, "dtype")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def validate_record(record: Any) -> str | None:
    """Why `record` is not a usable run record, or None when it is (the one rule: run, table, plot)."""
    if not isinstance(record, dict):
        return f"not a JSON object (got {type(record).__name__})"
    status = record.get("status")
    if status not in ("ok", "failed"):
        return f"missing or invalid field 'status' (got {status!r})"
    config = record.get("config")
    if not isinstance(config, dict):
        return "missing or invalid field 'config'"
    for key in REQUIRED_CONFIG:
        if key not in config or config[key] is None:
            return f"missing field 'config.{key}'"
    for key in ("dataset", "scenario", "strategy", "hash"):
        if not isinstance(config[key], str) or not config[key]:
            return f"field 'config.{key}' is not a non-empty string"
    if not _is_count(config["seed"]) or config["seed"] >= SEED_LIMIT:
        return f"field 'config.seed' is not a whole number in 0..2**32-1 (got {config['seed']!r})"
    for key in ("memory", "epochs"):  # shown in tables; absent is allowed, anything else must be a count
        if config.get(key) is not None and not _is_count(config[key]):
            return f"field 'config.{key}' is not a whole number >= 0 (got {config[key]!r})"
    if status == "ok":
        return _validate_ok_payload(record) or _validate_optional(record)
    return None


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and all(is_number(v) and math.isfinite(v) for v in value)


def _validate_optional(record: dict) -> str | None:
    """Fields a record may lack, but which reports read when present: of the shape they expect."""
    for key in COSTS:
        value = record.get(key)
        if value is not None and not (is_number(value) and math.isfinite(value)):
            return f"field '{key}' is not a finite number (got {value!r})"
    curves = record.get("train_curves")
    if curves is not None:
        if not isinstance(curves, list) or not all(isinstance(c, dict) for c in curves):
            return "field 'train_curves' is not a list of objects"
        for c in curves:
            if not all(_numbers(c.get(k, [])) for k in ("loss", "acc")) or \
                    len(c.get("loss", [])) != len(c.get("acc", [])):
                return "field 'train_curves' holds 'loss' and 'acc' that are not number lists of one length"
    per_task = record.get("per_task")
    if per_task is not None:
        if not isinstance(per_task, list) or not all(isinstance(t, dict) for t in per_task):
            return "field 'per_task' is not a list of objects"
        for key in PER_TASK_LISTS:
            lists = [t[key] for t in per_task if key in t]
            if not all(_numbers(v) for v in lists):
                return f"field 'per_task[].{key}' is not a list of finite numbers"
            if len({len(v) for v in lists}) > 1:
                return f"field 'per_task[].{key}' has lists of different lengths (one entry per layer)"
        for key in ("params", "train_s"):
            if not all(is_number(t[key]) and math.isfinite(t[key]) for t in per_task if key in t):
                return f"field 'per_task[].{key}' is not a finite number"
    return None


def _validate_ok_payload(record: dict) -> str | None:
    """An ok record must carry the numbers the tables are built from."""
    matrix = record.get("acc_matrix")
    if not isinstance(matrix, list) or not matrix or not all(isinstance(r, list) and r for r in matrix):
        return "missing or invalid field 'acc_matrix' (need a list of non-empty rows)"
    for row in matrix:
        if not all(v is None or (is_number(v) and math.isfinite(v)) for v in row):
            return "field 'acc_matrix' holds a value that is neither a finite number nor null"
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        return "missing or invalid field 'metrics'"
    for key in METRICS:
        if key not in metrics:
            return f"missing field 'metrics.{key}'"
        # a single-row matrix (the joint upper bound) has no forgetting or transfer to measure
        if metrics[key] is None and key != "final_acc" and len(matrix) == 1:
            continue
        if not is_number(metrics[key]) or not math.isfinite(metrics[key]):
            return f"field 'metrics.{key}' is not a finite number (got {metrics[key]!r})"
    return None


def is_ok(record: Any) -> bool:
    """A usable record with status ok."""
    return validate_record(record) is None and record["status"] == "ok"


def identity(config: dict[str, Any], code: str, device: str, threads: int) -> dict[str, Any]:
    """What a stored record must match to stand for a cell: configuration hash, code, device, threads."""
    return {"hash": config["hash"], "code": code, "device": device, "threads": threads}


def record_identity(record: dict[str, Any]) -> dict[str, Any]:
    return {"hash": record["config"]["hash"], "code": record.get("code"), "device": record.get("device"),
            "threads": record.get("threads")}


def is_done(record: Any, wanted: dict[str, Any]) -> bool:
    """The record is usable, ok, and made for this identity (same configuration, code, device, threads)."""
    return is_ok(record) and record_identity(record) == wanted


def previous_path(path: Path) -> Path:
    """Where `run --force` keeps the ok record it replaces (not `*.json`: tables never read it)."""
    return path.with_name(path.name + ".prev")


# Beside the records of a folder: one line per held-out record that a later run replaced (a
# trial rerun by newer code, or with --force). It was a look at held-out data all the same, and
# the tuning ledger (bench/ledger.py) counts these lines with the records.
REPLACED_LOOKS = "replaced_looks.jsonl"
_LOOK_FIELDS = ("config", "status", "code", "command", "run_id", "created")


def _keep_replaced_look(path: Path, current: Any, record: dict[str, Any]) -> None:
    """Append the held-out record about to be replaced at `path` to its folder's REPLACED_LOOKS."""
    if not isinstance(current, dict) or current.get("run_id") == record.get("run_id"):
        return
    config = current.get("config")
    if not isinstance(config, dict) or not float(config.get("holdout") or 0) > 0:
        return
    line = json.dumps({k: current[k] for k in _LOOK_FIELDS if k in current}, sort_keys=True)
    with open(path.parent / REPLACED_LOOKS, "a", encoding="utf-8") as out:  # one short append: atomic
        out.write(line + "\n")


def store_record(path: Path, record: dict[str, Any], wanted: dict[str, Any], tag: str,
                 force: bool = False) -> bool:
    """Put `record` at `path` unless that would lose a finished result; True when written.

    Kept: an ok record, when `record` failed (a failed attempt never replaces an ok
    record, whoever made it); an ok record of this very identity made by another
    run (`run_id` differs) — two runs that both trained the cell agree, the first stands.
    With `force` (`run --force`) an ok `record` replaces the ok record there, which is
    first copied byte for byte to `previous_path(path)` (an older `.prev` is overwritten).
    A held-out record (a tuning trial) that is replaced, by `force` or by a run of newer code,
    is first summarised in the folder's REPLACED_LOOKS, so the tuning ledger still counts it.
    """
    current = read_json(path)
    if is_ok(current) and current.get("run_id") != record.get("run_id"):
        if record.get("status") != "ok" or (is_done(current, wanted) and not force):
            return False
        if force:
            from bench.files import atomic_write

            atomic_write(previous_path(path), path.read_bytes())
    _keep_replaced_look(path, current, record)
    write_json_atomic(path, record, tag=tag)
    return True
