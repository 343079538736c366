"""IB sparse networks, the reference's recipe: gates under one global gamma pick few channels per task, then frozen.

The method (reference sections II (a), II (b), I (c.1), I (c.2), III (a)):

* **Gate.** Each hidden channel c of layer l multiplies its post-ReLU output by
  ``mu_c + sigma_c * eps`` (eps ~ N(0, 1) per sample, and per position in conv
  maps) while training; at test time the gate is the deterministic ``mu_c`` for
  channels with ``(mu_c / sigma_c)^2 >= threshold`` and 0 for the others.
  sigma is stored as ``log_sigma`` so it stays positive.
* **Sparsity.** Loss = cross-entropy + sum_{l,c} gamma_c * log(1 + (mu/sigma)^2). In `ib`, the
  reference's continual recipe (II (a)), gamma is one global value (``gamma``) and how many
  channels a task activates is the threshold's call. `ib_rate` (strategies/ib_rate.py, our
  extension) instead lets each task newly activate ``round(rate * initial width)`` (at least 1)
  channels per layer, and a per-channel gamma adapted during the task drives each layer toward
  that count (the reference's compression experiment, III (a); the rules and the constants, with
  where and why they depart from the reference's, are in ``strategies/ib/gamma.py``: the
  reference's 1e-10 start, x1.1 every 10 steps, would not reach a sparsifying gamma within a
  task). The rate is a target, not a guarantee: in the first grid's records every Split-MNIST and
  Omniglot task reaches it (at most 2 channels short of 200), but on Split-CIFAR-10 (3 epochs per
  task) 86 of the 180 (task, layer) pairs end short of it, down to 64% of it, with nothing capped.
  ``cap`` only ever removes: after a task it switches off the new channels beyond the rate, lowest
  |mu/sigma| first (the task report counts them). When a task is too short for gamma to converge,
  that is costly: the task's features were trained with every channel it left on, and the cap
  cuts them after training, with no step to adapt. At 2 epochs on the first Omniglot alphabet (9
  steps per epoch; rate 0.2, seed 0; measured once by a script outside the suite) gamma had only
  climbed to ~0.0067 and all 416 channels were active; the cap switched off 333 of them and the
  alphabet scored 5%, against 15% with ``cap = false`` and 23% at the protocol's 10 epochs
  (nothing capped there). Give such a task the epochs to converge or turn ``cap`` off.
* **Freezing.** After a task, the channels with ratio^2 >= threshold are active
  for good: their incoming weights from active channels, their bias and gate
  are frozen bit-exactly (restored after every optimizer step, so momentum,
  weight decay and Adam cannot move them), their weights from inactive channels
  are set to 0 and kept 0. Inactive channels are re-initialised (weights, bias,
  gate) at the start of the next task and trained on it.
* **Growth.** When a task arrives (not after the last one). In `ib`, the reference's rule (II (b)):
  a layer grows only when every one of its channels is active (its "capacity upper bound"), by
  ``grow`` new channels (default 1/8 of its initial width). In `ib_rate`, a departure from it: a
  layer grows when fewer channels are free than the task may take, by what it needs (or ``grow``
  when larger), so the parameter count follows the rate. Either way the next layer (or the heads)
  gets matching zero input weights, and new tensors are made on the model's device. Each task's
  report has ``grew_share``, the share of (task, layer) pairs after the first task so far in which
  a layer grew (the reference: about 25% on Omniglot).
* **Heads.** Task-IL: one head per task reading only the channels active for its
  task (weights from later channels are 0); old heads are frozen. Class-IL: one
  trainable output layer used only for the training loss, re-initialised at the start of
  every task after the first (I (c.2): its connections "will be initialized" for the next
  task; ``head_reset``); prediction is by the nearest class mean of the last hidden layer's
  features. The head is only a training signal for the features, and with the reset they
  suit nearest-mean prediction better (held-out Split-MNIST, 4 epochs, seeds 0-2, memory
  200: 89.59% mean kept, 90.35% reset at rate 0.3, 90.25% / 90.92% at rate 0.5, each seed
  gaining; memory 0, seed 0: 61.5% / 64.3%).
* **What IB needs in Class-IL.** Freezing keeps each class's features fixed on the channels
  active when it was learned, but channels switched on by later tasks change every class's
  features on those channels, so the class means must either be recomputed from stored
  data (``ncm_means = "exemplars"``, the default: the task's data and the replay memory as
  updated after the task) or kept from when each class was learned and compared on the
  channels active then only (``ncm_means = "kept"``, the reference's reading: needs no
  memory; squared distance divided by the number of channels compared, so that classes
  learned on fewer channels are not favoured). With ``ncm_scale`` each channel's difference
  is divided by its spread within the classes of the task that learned the mean (pooled over
  them, ``strategies/_ncm.py``): on Split-CIFAR-10 the first task's channels barely respond to
  later images (variance 0.017 against 0.35), so unscaled they sent 78% of task 2's test images
  to one task-1 class; the memory-free tables' tuning chooses scaled or unscaled on held-out
  data. The exemplar means are ``strategies/_ncm.py``'s rule, which `replay_ncm` shares. What limits
  nearest-mean accuracy with a memory is the feature space, not the means' estimate: on
  held-out Split-MNIST (seed 0) means from all the training data would score the same as
  those from the memory (89.6 / 89.5%), >90% of the errors put a sample into another task's
  class, and on the channels of later tasks (which saw an old class only through its
  exemplars) old classes' samples have a 1.5-2x larger mean squared distance to their class
  mean than their exemplars. Cosine distance (``ncm_normalize``) and more channels per
  task (``rate``) help a little each.
* **Optimizer state.** Adam's moments are cleared at the start of every task after the
  first: re-initialised channels start fresh; all other trained entries are frozen
  anyway, except the Class-IL output layer, whose moments restart with each task too.
* **Cost.** Frozen channels read only frozen channels, so while a task trains they run as a
  compact network without gradients (its weights cut once per task, a positive gate folded in:
  relu(a) * mu = relu(mu * a) for mu > 0) and only the free channels, which read every channel
  below from the two parts, take part in the backward pass. The free rows' weights are tensors
  of their own for the task (``IBFeatures.begin_task`` / ``end_task``): gradients, the
  optimizer's step and its state cover them only, not the layers' mostly frozen weights. At
  test time only the channels past the threshold are computed, and a frozen Task-IL head's
  features only from the channels frozen by its task. Same function as the dense forward
  (tested). On the two parts noise is drawn for free channels only (the dense forward, used
  when a layer has no frozen or no free channel, as in the first task, draws it for all and
  zeroes it on frozen ones), and for a channels-last map as a contiguous tensor (torch's CPU
  sampler is about 8x slower filling channels-last memory).
* **Report.** Per task: active channels and width per layer, channels grown and capped,
  parameters, the sparsity term, ``gamma`` (the global value, or with a rate per layer the
  mean adapted gamma of the task's free channels at its end) and the task's training time
  (``train_s``).

Choices and deviations from the reference (why):

* Channels frozen by earlier tasks run with their deterministic test-time gate
  (``mu``, no noise) while later tasks train. Their parameters cannot change, so
  noise on them would only regularise parameters that no longer learn; the new
  channels and heads train on the same old features they will read at test time.
  ``frozen_noise=True`` restores noise on all channels.
* Inactive channels are re-initialised at the *start* of the next task (not at
  the end of theirs), so evaluating right after a task sees the trained model.
* The rate counts channels per layer relative to the layer's *initial* width, and the
  sort/split is done per layer over the free channels only, not over the whole
  network: every layer then gets the requested sparsity.
* The gates have their own learning rate (``gate_lr``) and no weight decay: the
  ratio mu/sigma has to move by orders of magnitude within one task's few hundred
  steps, and weight decay on mu would act as an extra, unintended sparsity term.
* Class-IL NCM with exemplars: classes with neither data nor exemplars at hand keep
  their previous mean (zero on channels added since); with the shared memory every
  seen class has exemplars, so all means are recomputed.
* gamma's effect depends on the optimizer: under Adam the gates move at about
  ``gate_lr`` per step whatever the gradient's scale, so small gammas (1e-4) already
  sparsify; plain SGD needs gammas orders of magnitude larger and has a narrow
  window between "all active" and "all inactive" on small problems.
* There is no normalisation layer in the spec backbones, hence no normalisation
  state to freeze. ResNet backbones are not built from a spec and are unsupported.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.settings import Setting, resolve_settings
from strategies.ib.gamma import DEFAULTS as GAMMA

if TYPE_CHECKING:
    from bench.models import BackboneSpec

SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"

# TOML has no null: this word unsets an optional IB setting (None) in a protocol, a `--set` or a
# tuning grid (`bench tune` writes a None back as it).
NONE = "none"


class Unsettable(Setting):
    """An optional setting that NONE unsets. Kept here, not in bench.settings, whose change would
    alter the code fingerprint of every record; the rule suits any strategy's optional settings."""

    def check(self, where: str, value: Any) -> Any:
        return super().check(where, None if value == NONE else value)


# Settings of both IB rows: `ib` (this package, the reference's continual recipe) and `ib_rate`
# (strategies/ib_rate.py, a preset per-task rate: our extension).
COMMON: dict[str, Setting] = {
    "threshold": Setting(1.0, low=0.0, low_open=True, help="active when (mu/sigma)^2 >= threshold"),
    "mu_init": Setting(1.0, low=0.0, low_open=True),
    # the reference resets sigma to 0.01 (mu/sigma = 100): with a few hundred steps per task the
    # gates cannot travel that far, so start closer to the threshold (chosen on held-out MNIST)
    "sigma_init": Setting(0.3, low=0.0, low_open=True),
    "gate_lr": Unsettable(0.01, kind=float, low=0.0, low_open=True, optional=True,
                       help="learning rate of mu and log_sigma; none: the optimizer's"),
    "grow": Unsettable(None, kind=int, low=1, optional=True,
                    help="ib: channels added to a layer with no free channel (none: 1/8 of its initial width); "
                         "ib_rate: the least a layer grows by when it must"),
    "frozen_noise": Setting(False),
    "ncm": Unsettable(None, kind=bool, optional=True, help="nearest-class-mean prediction; none: in Class-IL only"),
    "ncm_means": Setting("exemplars", choices=("exemplars", "kept"),
                         help="Class-IL class means: recomputed from the task's data and the memory after "
                              "each task, or kept from when each class was learned and compared on the "
                              "channels active then"),
    # held out (Split-MNIST memory 0, 4 epochs, seed 0; the tuning records of 2026-12-03) scaled
    # scored 1.3 to 7.7 points more at 7 of the 8 settings of the two rows tried both ways, and the
    # same at gamma 0.01, where no channel stayed active
    "ncm_scale": Setting(True, help="kept means only: divide each channel's difference by its spread "
                                    "within the classes of the task that learned the mean"),
    "head_reset": Setting(True, help="Class-IL: re-initialise the output layer at the start of every task "
                                     "after the first (the reference's single-head design)"),
    "ncm_normalize": Setting(False, help="NCM on L2-normalised features (iCaRL's choice; not in the reference)"),
}
# `ib`: one global sparsity weight; how many channels a task activates is the threshold's call.
GLOBAL: dict[str, Setting] = {
    "gamma": Setting(1e-4, low=0.0, help="the global sparsity weight"),
}
# `ib_rate`: the adaptive per-channel gamma of the reference's compression experiment, per task.
RATE: dict[str, Setting] = {
    "rate": Setting(0.2, low=0.0, low_open=True, high=1.0,
                    help="channels a task may newly activate per layer, as a fraction of the layer's "
                         "initial width (rounded, at least 1), the target of the adaptive per-channel gamma"),
    "gamma_start": Setting(GAMMA["start"], low=0.0, low_open=True, help="adaptive gamma's value at a task's start"),
    "gamma_up": Setting(GAMMA["up"], low=1.0, help="factor on channels that should go but are there"),
    "gamma_down": Setting(GAMMA["down"], low=0.0, low_open=True, high=1.0,
                          help="factor on channels that should stay and are there"),
    "gamma_min": Setting(GAMMA["floor"], low=0.0, help="adaptive gamma's floor (and a revived channel's value)"),
    "gamma_max": Setting(GAMMA["ceiling"], low=0.0, low_open=True, help="adaptive gamma's ceiling"),
    "adapt_every": Setting(GAMMA["every"], low=1, help="optimizer steps between adaptations"),
    "cap": Setting(True, help="after a task, switch off the new channels beyond the rate (lowest "
                              "mu/sigma first; counted as capped in the task report; costly when the "
                              "task was too short for gamma to converge)"),
}
# The protocol's [strategies.ib] section may set any of these.
SETTINGS: dict[str, Setting] = {**GLOBAL, **COMMON}
# What `build_parts` reads: either row's settings; without a rate, the global gamma.
BUILD_SETTINGS: dict[str, Setting] = {
    **SETTINGS, **RATE,
    "rate": Unsettable(None, kind=float, low=0.0, low_open=True, high=1.0, optional=True,
                       help=RATE["rate"].help + "; \"none\": the global gamma"),
}
DEFAULTS: dict[str, Any] = {k: s.default for k, s in SETTINGS.items()}


def unsupported(dataset: str, scenario: str, memory: int, backbone: str | None) -> str | None:
    from bench.models import backbone_spec

    if backbone_spec(dataset, backbone) is None:
        return f"ib rebuilds the backbone layer by layer; {backbone} is not built from a layer spec"
    return None


def settings(params: dict[str, Any]) -> dict[str, Any]:
    """Either row's defaults overlaid with `params`, checked (raises bench.settings.SettingError);
    `ib_rate`'s when `params` sets a rate."""
    return resolve_settings("ib", BUILD_SETTINGS, params)


def conflict(params: dict[str, Any]) -> str | None:
    """Settings that are valid one by one but not together."""
    if params.get("ncm_means") == "kept" and params.get("ncm_normalize"):
        # a kept mean lives on the channels active when its class was learned; a normalised whole
        # feature vector would weigh it against channels it never saw
        return "ib: ncm_normalize needs ncm_means = \"exemplars\" (kept means are compared on their own channels)"
    return None


def build_parts(spec: BackboneSpec, multi_head: bool, params: dict[str, Any]):
    """(model, plugin) for a spec: what `build` assembles for either row, for tests too (a `rate`
    in `params` makes it `ib_rate`'s)."""
    from strategies.ib.network import IBNet
    from strategies.ib.plugin import IBPlugin

    s = settings(params)
    model = IBNet(spec, multi_head, threshold=s["threshold"], mu_init=s["mu_init"],
                  sigma_init=s["sigma_init"], frozen_noise=s["frozen_noise"])
    adaptive = {"start": s["gamma_start"], "up": s["gamma_up"], "down": s["gamma_down"],
                "floor": s["gamma_min"], "ceiling": s["gamma_max"], "every": s["adapt_every"]}
    plugin = IBPlugin(gamma=s["gamma"], grow=s["grow"], rate=s["rate"], adaptive=adaptive, cap=s["cap"],
                      ncm=s["ncm"], ncm_means=s["ncm_means"], gate_lr=s["gate_lr"],
                      ncm_normalize=s["ncm_normalize"], ncm_scale=s["ncm_scale"], head_reset=s["head_reset"])
    return model, plugin


def build(ctx):
    from bench.memory import ClassBalancedReplay

    model, plugin = build_parts(ctx.spec, ctx.scenario == "task-il", dict(ctx.params))
    # Avalanche's make_optimizer maps parameters by name, so the parameters of new heads and
    # of grown layers (same names, new tensors; grown before the optimizer is made) join it.
    strategy = ctx.template(plugins=[plugin], model=model)
    plugin.memory = next((p for p in strategy.plugins if isinstance(p, ClassBalancedReplay)), None)
    return strategy
