"""Protocols (one TOML file per dataset and scenario) and the resolved configuration of a cell.

A cell is (dataset, scenario, strategy, seed). Its configuration is the protocol's
settings, the strategy's own section, and the command-line overrides; its hash
(without the seed) names the record and decides whether a stored result can be
reused.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any

PROTOCOL_DIR = Path(__file__).parent / "protocols"
# Settings that change a result; anything else in a record (paths, timings) does not enter the hash.
CONFIG_VERSION = 1


class ConfigError(ValueError):
    """A setting that cannot be run: bad names, impossible values. The CLI exits with code 2."""


def protocol_path(dataset: str, scenario: str) -> Path:
    return PROTOCOL_DIR / f"{dataset}-{scenario}.toml"


def load_protocol(dataset: str, scenario: str) -> dict[str, Any]:
    path = protocol_path(dataset, scenario)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no protocol for {dataset} {scenario}: {path} is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optimizer.lr=0.1' -> (['optimizer', 'lr'], 0.1); values are read as TOML (numbers, strings, bools)."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: take it as a string
    return key.strip().split("."), value


def apply_overrides(protocol: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(protocol)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: {part} is not a section")
        node[path[-1]] = value
    return out


# Top-level protocol settings and what each must be; `strategies.<name>` sections are free-form
# (a strategy's own parameters) except for the `epochs` and `optimizer` they may override.
# `tune` holds the search spaces of `bench tune`: `budget = 8` and `[tune.<strategy>] key = [values]`.
# `memory0.<strategy>` sections hold the values of memory-free rows (`--memory 0`, tuned at memory 0);
# they override `strategies.<strategy>` when the budget is 0. `augment` turns on random crop and flip
# of every training batch (bench/augment.py).
PROTOCOL_KEYS = ("backbone", "epochs", "batch_size", "eval_batch_size", "memory", "optimizer", "strategies",
                 "tune", "memory0", "augment")
OPTIMIZERS = ("sgd", "adam")
OPTIMIZER_KEYS = ("name", "lr", "momentum", "weight_decay")  # what bench.strategy reads; others would be ignored


def _whole(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_count(where: str, value: Any, minimum: int) -> None:
    if not _whole(value, minimum):
        raise ConfigError(f"{where} must be a whole number >= {minimum}, got {value!r}")


def _check_optimizer(where: str, optimizer: Any, partial: bool) -> None:
    if not isinstance(optimizer, dict):
        raise ConfigError(f"{where} must be a section (e.g. --set {where}.lr=0.01), got {optimizer!r}")
    # an unknown key would change the configuration's hash while the training ignores it
    unknown = [k for k in optimizer if k not in OPTIMIZER_KEYS]
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(f'{where}.{k}' for k in unknown)}; "
                          f"valid: {', '.join(f'{where}.{k}' for k in OPTIMIZER_KEYS)}")
    if "name" in optimizer or not partial:
        if optimizer.get("name") not in OPTIMIZERS:
            raise ConfigError(f"{where}.name must be one of {', '.join(OPTIMIZERS)}, got {optimizer.get('name')!r}")
    for key in ("lr", "momentum", "weight_decay"):
        if key not in optimizer and (partial or key != "lr"):
            continue
        value = optimizer.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and (value > 0 if key == "lr" else value >= 0)
        if not ok:
            bound = "> 0" if key == "lr" else ">= 0"
            raise ConfigError(f"{where}.{key} must be a finite number {bound}, got {value!r}")


def validate_protocol(protocol: dict[str, Any]) -> None:
    """Raise ConfigError naming the first setting that cannot be run (after --set overrides)."""
    unknown = [k for k in protocol if k not in PROTOCOL_KEYS]
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(map(repr, unknown))}; valid: {', '.join(PROTOCOL_KEYS)}")
    if not isinstance(protocol.get("backbone"), str) or not protocol["backbone"]:
        raise ConfigError(f"backbone must be a name, got {protocol.get('backbone')!r}")
    _check_count("epochs", protocol.get("epochs"), 1)
    _check_count("batch_size", protocol.get("batch_size"), 1)
    _check_count("eval_batch_size", protocol.get("eval_batch_size"), 1)
    _check_count("memory", protocol.get("memory"), 0)
    _check_optimizer("optimizer", protocol.get("optimizer"), partial=False)
    if not isinstance(protocol.get("augment", False), bool):
        raise ConfigError(f"augment must be true or false, got {protocol['augment']!r}")
    for where in ("strategies", "memory0"):
        sections = protocol.get(where, {})
        if not isinstance(sections, dict):
            raise ConfigError(f"{where} must be a section, got {sections!r}")
        for name, own in sections.items():
            if not isinstance(own, dict):
                raise ConfigError(f"{where}.{name} must be a section, got {own!r}")
            if "epochs" in own:
                _check_count(f"{where}.{name}.epochs", own["epochs"], 1)
            if "optimizer" in own:
                _check_optimizer(f"{where}.{name}.optimizer", own["optimizer"], partial=True)
            tuned = own.get("tuned", [])
            if not isinstance(tuned, list) or not all(isinstance(k, str) for k in tuned):
                raise ConfigError(f"{where}.{name}.tuned must be a list of setting names, got {tuned!r}")


def resolve(protocol: dict[str, Any], dataset: str, scenario: str, strategy: str, seed: int,
            memory_used: int, holdout: float = 0.0, schema: dict[str, Any] | None = None,
            source: str | None = None) -> dict[str, Any]:
    """The full configuration of one cell; `memory_used` is the budget this strategy actually gets.

    `schema` is the strategy's declared settings: their defaults fill what the protocol
    leaves out, and a value that is unknown or out of range raises ConfigError (naming the
    strategy's file `source`, where the setting would be declared).
    """
    from bench.settings import SettingError, resolve_settings

    own = dict(protocol.get("strategies", {}).get(strategy, {}))
    if protocol["memory"] == 0:  # memory-free rows run with the values tuned at memory 0
        own.update(protocol.get("memory0", {}).get(strategy, {}))
    tuned = own.pop("tuned", [])  # the keys `bench tune` chose (written there with the values)
    optimizer = {**protocol["optimizer"], **own.pop("optimizer", {})}
    epochs = own.pop("epochs", protocol["epochs"])
    if schema is not None:
        try:
            own = resolve_settings(strategy, schema, own, source)
        except SettingError as exc:
            raise ConfigError(str(exc)) from None
    config = {
        "version": CONFIG_VERSION,
        "dataset": dataset,
        "scenario": scenario,
        "strategy": strategy,
        "seed": seed,
        "backbone": protocol["backbone"],
        "memory": memory_used,
        "epochs": int(epochs),
        "batch_size": int(protocol["batch_size"]),
        "eval_batch_size": int(protocol["eval_batch_size"]),
        "optimizer": optimizer,
        "params": own,
        "holdout": holdout,
    }
    # Added only when set, so that the records of configurations without them keep their hashes.
    if protocol.get("augment"):
        config["augment"] = True
    if tuned:
        config["tuned"] = sorted(tuned)
    return config


def has_section(protocol: dict[str, Any], strategy: str) -> bool:
    """Whether the protocol sets anything for this strategy at its budget (else the strategy runs on
    its declared defaults, chosen for no protocol); at memory 0 a `[memory0.<name>]` section counts too."""
    sections = [protocol.get("strategies", {})] + ([protocol.get("memory0", {})] if protocol["memory"] == 0 else [])
    return any(strategy in s for s in sections)


def config_hash(config: dict[str, Any]) -> str:
    """Hash of everything but the seed, so the seeds of one setting share it."""
    blob = json.dumps({k: v for k, v in config.items() if k not in ("seed", "hash")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
