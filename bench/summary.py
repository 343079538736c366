"""Run records read back into one pandas frame: a row per seed, then a row per table line.

Every benchmark cell (dataset, scenario, strategy, config, seed) leaves one JSON
record under `<results>/runs/`. `load_records` reads those that pass the one
validity rule (`bench.records.validate_record`) and names the others;
`seed_frame` flattens them to one row per record, and `summary_frame` groups
those rows into one line per strategy configuration, with mean and sample std
over seeds. Tables, significance and plots all start from here.

No torch, no avalanche, no matplotlib: reports must be cheap to rebuild.
"""
from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from bench.display import UNTUNED_MARK
from bench.records import METRICS, is_number, validate_record

COSTS = ("time_s", "peak_rss_mb", "params", "extra_state_bytes")
STRATEGY_ORDER = ("naive", "joint", "replay", "ewc", "lwf", "si", "mas", "icarl", "agem", "gdumb", "bic", "pnn", "ib", "ib_rate")
KEY = ["dataset", "scenario", "strategy", "hash"]
DDOF = 1  # sample std: with a handful of seeds the population std understates spread

_SEED_COLUMNS = KEY + ["seed", "ok", "memory", "epochs", "old_code", "dirty", "untuned", "backbone", "data_official",
                       "tasks", "held", *METRICS, *COSTS]

# Config keys that never distinguish two configurations of one strategy.
_LABEL_IGNORE = {"seed", "hash"}


# --------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------

def load_records(results_dir: str | os.PathLike) -> tuple[list[dict], list[tuple[str, str]]]:
    """Read `<results_dir>/runs/**/*.json`; return (valid records, skipped (path, reason)).

    Invalid files are reported on stderr and left out, so one truncated write
    from a crashed worker cannot take the whole report down.
    """
    runs = Path(results_dir) / "runs"
    records: list[dict] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(runs.glob("**/*.json")):
        record, reason = _read_record(path)
        if reason is not None:
            print(f"warning: skipping {path}: {reason}", file=sys.stderr)
            skipped.append((str(path), reason))
        else:
            records.append(record)
    _warn_duplicates(records)
    return records, skipped


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    """Parse and validate one file; the second item is the reason it is unusable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable: {exc}"
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc}"
    reason = validate_record(record)
    return (None, reason) if reason else (record, None)


def missing(value: Any) -> bool:
    """None, NaN or pandas' NA (which a nullable integer column yields)."""
    return value is None or (not isinstance(value, (list, tuple, dict)) and bool(pd.isna(value)))


def _warn_duplicates(records: list[dict]) -> None:
    """Two records for one (config, seed) would count that seed twice; say so."""
    seen: dict[tuple, int] = defaultdict(int)
    for rec in records:
        cfg = rec["config"]
        seen[(cfg["dataset"], cfg["scenario"], cfg["strategy"], cfg["hash"], cfg["seed"])] += 1
    for key, count in seen.items():
        if count > 1:
            print(f"warning: {count} records for {'/'.join(map(str, key))}; "
                  "each is counted as a seed", file=sys.stderr)


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------

def seed_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per record: its key, seed, status and numbers (None for a failed seed), plus what
    captions state (backbone, number of tasks, whether the data were the official files)."""
    return pd.DataFrame([_flat_row(r) for r in records], columns=_SEED_COLUMNS)


def summary_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per (dataset, scenario, strategy, config hash), in table order.

    Columns: the key, `label` (the strategy's name, plus what distinguishes its config
    from its siblings besides its own settings), `settings` (those settings, for the row's
    footnote: `settings_note`), memory, epochs, n_seeds, n_failed, and `<m>_mean` / `<m>_std`
    over the ok seeds for every metric (fractions, as stored) and cost.
    `std` uses ddof=1, so it is NaN with a single ok seed.
    """
    stat_cols = [f"{m}_{s}" for m in METRICS + COSTS for s in ("mean", "std")]
    columns = KEY + ["label", "settings", "memory", "held_max", "epochs", "n_seeds", "n_failed", "n_old_code",
                     "n_dirty", "n_untuned"] + stat_cols
    if not records:
        return pd.DataFrame(columns=columns)
    labels, notes = config_labels(records), _settings_notes(records)
    rows = [_summary_row(key, group, labels[key]) | {"settings": notes[key]}
            for key, group in seed_frame(records).groupby(KEY, sort=False)]
    frame = pd.DataFrame(rows, columns=columns)
    for col in ("memory", "held_max", "epochs"):
        frame[col] = _as_int_if_integral(frame[col])
    return _sort_rows(frame).reset_index(drop=True)


def seeds_of(seeds: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The seed rows behind some summary rows (one table's, say)."""
    wanted = pd.MultiIndex.from_frame(rows[KEY])
    return seeds[pd.MultiIndex.from_frame(seeds[KEY]).isin(wanted)]


def records_or_load(results_dir: str | os.PathLike, records: Sequence[dict] | None) -> list[dict]:
    return list(records) if records is not None else load_records(results_dir)[0]


OLD_CODE_MARK, DIRTY_MARK = "†", "*"


def current_code(strategy: str) -> str | None:
    """The fingerprint of the code a cell of `strategy` would run now (None: no such strategy here)."""
    return _current_codes().get(strategy)


@functools.lru_cache(maxsize=1)
def _current_codes() -> dict[str, str]:
    from bench import registry
    from bench.provenance import code_fingerprint

    return {name: code_fingerprint(info.module.__name__) for name, info in registry.strategies().items()}


def marks(row: pd.Series) -> str:
    return (OLD_CODE_MARK if row.get("n_old_code", 0) else "") + (DIRTY_MARK if row.get("n_dirty", 0) else "") \
        + (UNTUNED_MARK if row.get("n_untuned", 0) else "")


def on_defaults(dataset: str, scenario: str, strategy: str, memory: Any) -> bool:
    """Whether a row ran on the strategy's declared defaults: it declares settings, and its protocol file
    has no section for it at that budget (bench.config.has_section), so nothing was chosen for it there."""
    from bench import config as cfg
    from bench import registry

    info = registry.strategies().get(strategy)
    if info is None or not info.settings or not is_number(memory):
        return False
    path = cfg.protocol_path(dataset, scenario)
    try:
        protocol = _protocol(dataset, scenario, path, path.stat().st_mtime_ns)
    except (cfg.ConfigError, OSError, ValueError):
        return False
    return not cfg.has_section({**protocol, "memory": memory}, strategy)


@functools.lru_cache(maxsize=32)
def _protocol(dataset: str, scenario: str, path: Path, stamp: int) -> dict[str, Any]:
    """A protocol as read once per version of its file (the path and modification time are the key:
    a table made after `bench tune` rewrote a protocol, or from another copy, reads the new one)."""
    from bench import config as cfg

    return cfg.load_protocol(dataset, scenario)


def _as_int_if_integral(column: pd.Series) -> pd.Series:
    """Keep `200` from printing as `200.0` when a missing value forced floats."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().sum() != column.notna().sum():
        return column  # non-numeric settings stay as they are
    if (numbers.dropna() % 1 == 0).all():
        return numbers.astype("Int64")
    return numbers


def _flat_row(record: dict) -> dict:
    """The per-seed numbers of one record; failed records keep only their key."""
    cfg = record["config"]
    row = {k: cfg[k] for k in KEY}
    row.update(seed=cfg["seed"], ok=record["status"] == "ok",
               memory=cfg.get("memory"), epochs=cfg.get("epochs"),
               # marks concern the numbers shown, so only ok seeds count
               old_code=record["status"] == "ok" and record.get("code") != current_code(cfg["strategy"]),
               dirty=record["status"] == "ok" and record.get("git_dirty") is True,
               untuned=record["status"] == "ok" and on_defaults(cfg["dataset"], cfg["scenario"], cfg["strategy"],
                                                                cfg.get("memory")))
    row.update(backbone=cfg.get("backbone"), data_official=record.get("data_official"),
               tasks=len(record["acc_matrix"][-1]) if row["ok"] else None)
    held = record.get("exemplars_held")
    row["held"] = max(held) if isinstance(held, list) and held and all(map(is_number, held)) else None
    metrics = record.get("metrics") or {}
    for m in METRICS:
        row[m] = metrics.get(m) if row["ok"] else None
    for c in COSTS:
        value = record.get(c)
        row[c] = value if row["ok"] and is_number(value) else None
    return row


def _summary_row(key: tuple, group: pd.DataFrame, label: str) -> dict:
    ok = group[group["ok"]]
    row = dict(zip(KEY, key))
    held = pd.to_numeric(group["held"], errors="coerce").dropna()
    row.update(label=label, memory=group["memory"].iloc[0], held_max=held.max() if len(held) else None,
               epochs=group["epochs"].iloc[0], n_seeds=len(group), n_failed=int((~group["ok"]).sum()),
               n_old_code=int(group["old_code"].sum()), n_dirty=int(group["dirty"].sum()),
               n_untuned=int(group["untuned"].sum()))
    for col in METRICS + COSTS:
        values = pd.to_numeric(ok[col], errors="coerce").dropna()
        row[f"{col}_mean"] = values.mean() if len(values) else np.nan
        row[f"{col}_std"] = values.std(ddof=DDOF) if len(values) > DDOF else np.nan
    return row


def strategy_rank(strategy: str) -> tuple[int, str]:
    """Sort key: the fixed benchmark order first, then any others alphabetically."""
    name = strategy.lower()
    if name in STRATEGY_ORDER:
        return STRATEGY_ORDER.index(name), name
    return len(STRATEGY_ORDER), name


def _sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    order = sorted(range(len(frame)), key=lambda i: (
        frame["dataset"].iat[i], frame["scenario"].iat[i],
        strategy_rank(frame["strategy"].iat[i]), natural_key(frame["label"].iat[i])))
    return frame.iloc[order]


def natural_key(text: str) -> list:
    """Sort `epochs 5` before `epochs 10`: digit runs compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(text)) if t]


def config_labels(records: Iterable[dict]) -> dict[tuple, str]:
    """Map each (dataset, scenario, strategy, hash) to a row label.

    A strategy with one config is labelled by its name alone; with several,
    each label names the config values that differ, e.g. `ewc (memory 0)`.
    """
    configs: dict[tuple, dict[tuple, dict]] = defaultdict(dict)
    names: dict[tuple, str] = {}
    for rec in records:
        cfg = rec["config"]
        configs[(cfg["dataset"], cfg["scenario"], cfg["strategy"])].setdefault(
            cfg["hash"], _flatten(cfg))
        names.setdefault((cfg["dataset"], cfg["scenario"], cfg["strategy"], cfg["hash"]), row_name(rec))
    labels = {}
    for (dataset, scenario, strategy), by_hash in configs.items():
        shown = {h: names[(dataset, scenario, strategy, h)] for h in by_hash}
        for h, text in _distinguish(shown, by_hash).items():
            labels[(dataset, scenario, strategy, h)] = text
    return labels


def _settings_notes(records: Iterable[dict]) -> dict[tuple, str]:
    """(dataset, scenario, strategy, hash) -> the row's footnote (`settings_note`)."""
    notes: dict[tuple, str] = {}
    for rec in records:
        cfg = rec["config"]
        notes.setdefault((cfg["dataset"], cfg["scenario"], cfg["strategy"], cfg["hash"]), settings_note(cfg))
    return notes


def row_name(record: dict) -> str:
    """The strategy's name, as `<name> + replay` when it also trained with the matched buffer."""
    cfg = record["config"]
    shared = record.get("shared_replay")
    if shared is None:  # records from before the field: the strategy's declared memory kind decides
        from bench import registry

        info = registry.strategies().get(cfg["strategy"])
        shared = info is not None and info.memory == "shared" and is_number(cfg.get("memory")) \
            and cfg["memory"] > 0 and not cfg["strategy"].startswith("replay")  # replay and its variants
    return f"{cfg['strategy']} + replay" if shared else cfg["strategy"]


def _distinguish(shown: dict[str, str], by_hash: dict[str, dict]) -> dict[str, str]:
    """Short labels: the row's name, plus only what tells two rows of that name apart.

    A strategy's own settings (`params.*`, `tuned`) go into the row's footnote (`settings_note`),
    not the label; the memory is named only where two rows of one name differ in it (the `+ replay`
    name already tells a row with the matched buffer from one without).
    """
    if len(by_hash) == 1:
        return dict(shown)
    keys = sorted({k for cfg in by_hash.values() for k in cfg} - _LABEL_IGNORE - {"tuned"})
    keys = [k for k in keys if not k.startswith("params.")]
    parts: dict[str, list[str]] = {}
    for h, cfg in by_hash.items():
        siblings = [c for g, c in by_hash.items() if shown[g] == shown[h]]
        parts[h] = [f"{k} {_show(cfg.get(k))}" for k in keys
                    if len({_show(c.get(k)) for c in siblings}) > 1]
    # Rows that still share a label (two configs of one name differing only in the strategy's own
    # settings, as stale records can leave) name those settings, then, if nothing visible differs
    # (e.g. a code-version salt), the hash.
    for extra in ("params", "hash"):
        groups: dict[tuple, list[str]] = defaultdict(list)
        for h, p in parts.items():
            groups[(shown[h], *p)].append(h)
        for same in (g for g in groups.values() if len(g) > 1):
            if extra == "hash":
                for h in same:
                    parts[h] = parts[h] + [f"hash {h}"]
                continue
            own = sorted({k for h in same for k in by_hash[h] if k.startswith("params.")})
            differ = [k for k in own if len({_show(by_hash[h].get(k)) for h in same}) > 1]
            for h in same:
                parts[h] = parts[h] + [f"{k[len('params.'):]} {_short(by_hash[h].get(k))}" for k in differ]
    return {h: f"{shown[h]} ({', '.join(p)})" if p else shown[h] for h, p in parts.items()}


def settings_note(cfg: dict) -> str:
    """A row's own settings for its footnote: those tuned or not the strategy's default, then `tuned: ...`.

    `cfg` is a record's configuration, nested (`params`) or flattened (`params.KEY`).
    """
    params = cfg.get("params") if isinstance(cfg.get("params"), dict) else \
        {k[len("params."):]: v for k, v in cfg.items() if k.startswith("params.")}
    tuned = [str(t) for t in cfg.get("tuned") or []] if isinstance(cfg.get("tuned"), list) else []
    defaults = _declared_defaults(str(cfg.get("strategy")))
    shown = [f"{k} {_short(v)}" for k, v in params.items()
             if k in tuned or k not in defaults or _short(defaults[k]) != _short(v)]
    text = ", ".join(shown)
    if tuned:
        text += ("; " if text else "") + "tuned: " + ", ".join(tuned)
    return text


@functools.lru_cache(maxsize=None)
def _declared_defaults(strategy: str) -> dict[str, Any]:
    from bench import registry

    info = registry.strategies().get(strategy)
    return {k: s.default for k, s in info.settings.items()} if info is not None else {}


def _short(value: Any) -> str:
    """A setting as a footnote shows it: 1e+06, not 1000000.0."""
    return f"{value:g}" if isinstance(value, float) else _show(value)


def _flatten(cfg: dict, prefix: str = "") -> dict:
    """Nested config sections become dotted keys, so they can be compared one by one."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return json.dumps(value)
    return str(value)


