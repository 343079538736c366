"""Finds strategies by name: every module (or package) in `strategies/` is one method.

A strategy module defines
    SCENARIOS = ("class-il", "task-il")   # where it applies
    MEMORY = "shared" | "own" | "none"    # uses the matched memory, keeps its own of the same size, or none
    def build(ctx: StrategyContext): ...  # returns an Avalanche strategy
and optionally
    NAME = "..."                          # defaults to the module name
    SETTINGS = {"key": Setting(...)}      # its own settings with defaults and ranges (bench.settings)
    WHOLE_STREAM = True                   # trained once on all tasks together (the joint upper bound)
    def unsupported(dataset, scenario, memory, backbone) -> str | None   # why it doesn't apply to a cell
    def invalid(memory, n_classes) -> str | None  # why a setting is impossible (an input error)
    def conflict(params) -> str | None     # why settings valid one by one cannot go together
Its docstring's first line describes it in `bench list`. docs/extending.md walks through adding one.
Importing a strategy module must be cheap: import Avalanche inside `build`.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType

MEMORY_KINDS = ("shared", "own", "none")


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    module: ModuleType

    @property
    def scenarios(self) -> tuple[str, ...]:
        return tuple(self.module.SCENARIOS)

    @property
    def memory(self) -> str:
        return self.module.MEMORY

    @property
    def settings(self) -> dict:
        """The declared settings (name -> bench.settings.Setting); none when the module declares none."""
        return dict(getattr(self.module, "SETTINGS", {}))

    @property
    def source(self) -> str:
        """The strategy's file (its package's `__init__.py`), relative to the project: where it declares SETTINGS."""
        from pathlib import Path

        path = Path(self.module.__file__).resolve()
        root = Path(__file__).resolve().parent.parent
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    @property
    def whole_stream(self) -> bool:
        return bool(getattr(self.module, "WHOLE_STREAM", False))

    @property
    def summary(self) -> str:
        return (self.module.__doc__ or "").strip().splitlines()[0] if self.module.__doc__ else ""

    def why_not(self, dataset: str, scenario: str, memory: int, backbone: str | None = None) -> str | None:
        """The reason this strategy cannot run the cell, or None when it can."""
        if scenario not in self.scenarios:
            return f"{self.name} is for {' and '.join(self.scenarios)} only"
        check = getattr(self.module, "unsupported", None)
        return check(dataset, scenario, memory, backbone) if check else None

    def invalid(self, memory: int, n_classes: int) -> str | None:
        """Why these settings are impossible for this strategy (bad input), or None."""
        check = getattr(self.module, "invalid", None)
        return check(memory, n_classes) if check else None

    def conflict(self, params: dict) -> str | None:
        """Why these resolved settings cannot go together (bad input), or None."""
        check = getattr(self.module, "conflict", None)
        return check(params) if check else None

    def build(self, ctx):
        return self.module.build(ctx)


def _discover() -> dict[str, StrategyInfo]:
    import strategies

    found: dict[str, StrategyInfo] = {}
    for mod in pkgutil.iter_modules(strategies.__path__):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"strategies.{mod.name}")
        name = getattr(module, "NAME", mod.name)
        for attr in ("SCENARIOS", "MEMORY", "build"):
            if not hasattr(module, attr):
                raise TypeError(f"strategies/{mod.name}: missing {attr} (see bench/registry.py)")
        if module.MEMORY not in MEMORY_KINDS:
            raise TypeError(f"strategies/{mod.name}: MEMORY must be one of {MEMORY_KINDS}")
        found[name] = StrategyInfo(name, module)
    return found


_REGISTRY: dict[str, StrategyInfo] | None = None


def strategies() -> dict[str, StrategyInfo]:
    """All registered strategies, by name in alphabetical order.

    The order `bench list` and `bench run` show them in is `bench.display`'s: it is kept out of
    this module and of what it imports, because the registry runs in every cell and so its
    code is part of every record's code fingerprint (bench/provenance.py).
    """
    global _REGISTRY
    if _REGISTRY is None:
        found = _discover()
        _REGISTRY = {n: found[n] for n in sorted(found)}
    return _REGISTRY


def get(name: str) -> StrategyInfo:
    registry = strategies()
    if name not in registry:
        raise KeyError(f"unknown strategy {name!r}; valid: {', '.join(registry)}")
    return registry[name]
