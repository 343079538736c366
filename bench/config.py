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


def resolve(protocol: dict[str, Any], dataset: str, scenario: str, strategy: str, seed: int,
            memory_used: int, holdout: float = 0.0) -> dict[str, Any]:
    """The full configuration of one cell; `memory_used` is the budget this strategy actually gets."""
    own = dict(protocol.get("strategies", {}).get(strategy, {}))
    optimizer = {**protocol["optimizer"], **own.pop("optimizer", {})}
    return {
        "version": CONFIG_VERSION,
        "dataset": dataset,
        "scenario": scenario,
        "strategy": strategy,
        "seed": seed,
        "backbone": protocol["backbone"],
        "memory": memory_used,
        "epochs": int(own.pop("epochs", protocol["epochs"])),
        "batch_size": int(protocol["batch_size"]),
        "eval_batch_size": int(protocol["eval_batch_size"]),
        "optimizer": optimizer,
        "params": own,
        "holdout": holdout,
    }


def config_hash(config: dict[str, Any]) -> str:
    """Hash of everything but the seed, so the seeds of one setting share it."""
    blob = json.dumps({k: v for k, v in config.items() if k not in ("seed", "hash")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
