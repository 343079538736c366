"""ER-ACE at IB's size: `er_ace` on the backbone widened to IB's parameter count in the table (strategies/_at_size.py)."""
from strategies import er_ace as BASE
from strategies import _at_size

NAME = "er_ace_at_ib_size"
SCENARIOS = ('class-il',)
MEMORY = BASE.MEMORY
SETTINGS = _at_size.settings(BASE)


def unsupported(dataset, scenario, memory, backbone):
    return _at_size.unsupported(NAME, BASE, dataset, scenario, memory, backbone)


def build(ctx):
    return _at_size.build(BASE, ctx)
