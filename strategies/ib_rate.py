"""IB with a preset rate: each task may newly activate a fixed fraction of every layer (our extension).

The same network, gates, freezing, heads and nearest-mean prediction as `ib` (strategies/ib, whose
docstring describes them), with two departures from the reference's continual recipe, which `ib`
runs:

* **Sparsity.** Instead of one global gamma, the adaptive per-channel gamma of the reference's
  compression experiment (its III (a), Tables 4/5) drives each layer, during every task, toward
  ``round(rate * initial width)`` (at least 1) newly active channels; ``cap`` switches off the new
  channels beyond it after the task. The rules and the constants, and where they depart from the
  reference's, are in ``strategies/ib/gamma.py``.
* **Growth.** A layer grows when fewer of its channels are free than the task may take, by what it
  needs (or ``grow`` when larger), so the parameter count follows the rate: the network grows on
  almost every task, where `ib` grows a layer only when none of its channels is free.

Applying the compression experiment's per-channel gamma to continual learning is this suite's
idea, not the reference's.
"""
from __future__ import annotations

from strategies.ib import COMMON, MEMORY, RATE, SCENARIOS, build, conflict, unsupported  # noqa: F401

# The protocol's [strategies.ib_rate] section may set any of these.
SETTINGS = {**RATE, **COMMON}
