"""Rows "at IB's size" (not a strategy): a strategy run on the backbone widened to IB's parameter count.

IB grows its network, so a gap between IB and a rival may be the size, not the method. An
`<name>_at_ib_size` module runs strategy `<name>` unchanged but with every hidden layer of the spec
backbone `width` times wider (`bench.models.widened`). The protocol declares the row by setting
`width` in `[strategies.<name>_at_ib_size]` (or `[memory0....]` for the memory-free table), chosen so
that the parameter count is within 10% of IB's seed-0 count in that table (`scripts/ib_size.py`
computes it from the records); the row runs only where a protocol declares it. The base strategy's
settings keep their names; tuned values go into the variant's own section.
"""
from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

from bench.settings import Setting

WIDTH = Setting(None, kind=float, low=0.0, low_open=True, optional=True,
                help="multiplier on every hidden layer's width: the row's backbone at IB's parameter count "
                     "in this table (set in the protocol)")


def settings(base: ModuleType) -> dict[str, Setting]:
    """The base strategy's settings plus `width`."""
    return {**getattr(base, "SETTINGS", {}), "width": WIDTH}


def declared_width(name: str, dataset: str, scenario: str, memory: int) -> Any:
    """The `width` the protocol of (dataset, scenario) declares for row `name`, or None."""
    from bench.config import ConfigError, load_protocol

    try:
        protocol = load_protocol(dataset, scenario)
    except ConfigError:
        return None
    own = dict(protocol.get("strategies", {}).get(name, {}))
    if memory == 0:
        own.update(protocol.get("memory0", {}).get(name, {}))
    return own.get("width")


def unsupported(name: str, base: ModuleType, dataset: str, scenario: str, memory: int,
                backbone: str | None) -> str | None:
    """Why the row cannot run the cell: the base strategy's reasons, a backbone without a spec, or a
    protocol that does not declare IB's size for it."""
    check = getattr(base, "unsupported", None)
    reason = check(dataset, scenario, memory, backbone) if check else None
    if reason:
        return reason
    from bench.models import backbone_spec

    if backbone_spec(dataset, backbone) is None:
        return f"{name} widens the layers of a spec backbone; {backbone} is not built from one"
    if declared_width(name, dataset, scenario, memory) is None:
        return (f"the {dataset}-{scenario} protocol declares no IB size for {name} "
                f"(set width in [strategies.{name}])")
    return None


def build(base: ModuleType, ctx):
    """The base strategy built on the widened backbone, with its own settings (without `width`)."""
    params = {k: v for k, v in ctx.params.items() if k != "width"}
    return base.build(dataclasses.replace(ctx, width=ctx.params["width"], params=params))
