"""A strategy's own settings, declared next to their defaults and checked before any training.

A strategy module declares

    SETTINGS = {"lambda": Setting(5000.0, low=0.0, help="penalty weight")}

and the protocol's `[strategies.<name>]` section (and `--set strategies.<name>.KEY=...`)
may set only those keys, with values of the declared type and range. The defaults fill
in whatever a protocol leaves out, so a record states every value a cell ran with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Keys every strategy section may hold besides its own settings: they override the protocol's.
SHARED_KEYS = ("epochs", "optimizer")


class SettingError(ValueError):
    """A strategy setting that is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Setting:
    """One setting: its default, and what a value must be.

    The type is the default's (int, float, bool or str) unless `kind` says otherwise;
    an int is accepted where a float is expected. `optional` allows None (TOML has no
    null, so None can only be a default). `low`/`high` bound numbers (inclusive unless
    `low_open`), `choices` bound strings.
    """

    default: Any
    kind: type | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    help: str = ""

    @property
    def type(self) -> type:
        if self.kind is not None:
            return self.kind
        if self.default is None:
            raise TypeError("a setting whose default is None needs kind=")
        return type(self.default)

    def check(self, where: str, value: Any) -> Any:
        """The value as the setting's type; raises SettingError naming `where` when it is not allowed."""
        if value is None:
            if self.optional:
                return None
            raise SettingError(f"{where} must be set")
        kind = self.type
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SettingError(f"{where} must be {_article(kind)}, got {value!r}")
        if kind in (int, float):
            if not math.isfinite(value):
                raise SettingError(f"{where} must be finite, got {value!r}")
            if self.low is not None and (value <= self.low if self.low_open else value < self.low):
                raise SettingError(f"{where} must be {'>' if self.low_open else '>='} {self.low}, got {value!r}")
            if self.high is not None and value > self.high:
                raise SettingError(f"{where} must be <= {self.high}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise SettingError(f"{where} must be one of {', '.join(map(repr, self.choices))}, got {value!r}")
        return value


def _article(kind: type) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, kind.__name__)


def resolve_settings(strategy: str, schema: dict[str, Setting], given: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with `given`, every value checked; raises SettingError on the first problem."""
    unknown = sorted(set(given) - set(schema) - set(SHARED_KEYS))
    if unknown:
        valid = ", ".join(schema) or "none"
        raise SettingError(f"unknown setting strategies.{strategy}.{unknown[0]}; valid: {valid}")
    out = {}
    for key, setting in schema.items():
        out[key] = setting.check(f"strategies.{strategy}.{key}", given.get(key, setting.default))
    return out
