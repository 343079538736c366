"""Each of IB's mechanisms pinned by a direct check (no accuracy threshold): break the mechanism and
its test here fails.

Old Task-IL heads frozen while replay reaches them; the Class-IL output layer trained within a task
(head_reset or not); gate noise while training (dense and two-part forward); grown
tensors on the model's device; the cap after a task; the test-time mask of the compact forward;
free channels' weights, biases and gates re-initialised at a task's start.
"""
from __future__ import annotations

import math

import pytest
import torch
from avalanche.core import SupervisedPlugin
from test_ib import ADAM, CONV, MLP, benchmark, dense_features, half_frozen, images, strategy_for

from strategies.ib.network import GatedLayer, IBNet

RATE = {"rate": 0.25, "gate_lr": 0.05, "sigma_init": 0.3}


def test_earlier_task_il_heads_stay_frozen_while_replay_reaches_them():
    """With a memory, old tasks' samples flow through their own heads while a later task trains:
    the heads get gradients, yet must not move."""
    grads: list[float] = []

    class HeadGradient(SupervisedPlugin):  # placed before IB, which masks frozen gradients
        def before_update(self, strategy, **kwargs):
            if "0" in strategy.model.frozen_heads:
                grad = strategy.model.heads["0"].weight.grad
                grads.append(0.0 if grad is None else float(grad.abs().sum()))

    bench = benchmark(task_il=True, n_tasks=2, per_class=64)
    strategy, plugin, _ = strategy_for(MLP, True, RATE, ADAM, memory=20, epochs=2, before=(HeadGradient(),))
    strategy.train(bench.train_stream[0])
    head = {n: p.detach().clone() for n, p in strategy.model.heads["0"].named_parameters()}
    strategy.train(bench.train_stream[1])
    assert grads and max(grads) > 0  # replayed samples of task 0 did reach its head
    after = dict(strategy.model.heads["0"].named_parameters())
    for name, value in head.items():
        assert torch.equal(after[name].detach()[tuple(slice(0, n) for n in value.shape)], value), name


@pytest.mark.parametrize("head_reset", [True, False])
def test_class_il_output_layer_trains_within_each_task(head_reset):
    """The single output layer is trained by every task, old classes' rows included: compared with
    its value at the task's first step (after any reset), not with the previous task's end."""
    at_start: list[torch.Tensor] = []

    class FirstStep(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kwargs):
            if len(at_start) == len(plugin.reports):  # the first step of each task
                at_start.append(strategy.model.head.weight.detach().clone())

    bench = benchmark(task_il=False, n_tasks=2, per_class=64)
    strategy, plugin, _ = strategy_for(MLP, False, {**RATE, "head_reset": head_reset}, ADAM, memory=20, epochs=1,
                                       before=(FirstStep(),))
    for k, experience in enumerate(bench.train_stream):
        strategy.train(experience)
        end = strategy.model.head.weight.detach()
        start = at_start[k]
        assert start.shape == end.shape == (2 * (k + 1), strategy.model.features.out_features)
        for row in range(start.shape[0]):  # every class's row moved during the task
            assert not torch.equal(end[row], start[row]), (k, row)


def test_gate_noise_on_free_channels_while_training_dense_forward():
    """GatedLayer.forward (every channel, the first task's path): a free channel's gate is mu + sigma * eps
    with eps ~ N(0, 1) per sample; a frozen channel's is exactly mu; at test time no noise."""
    torch.manual_seed(0)
    gated = GatedLayer(torch.nn.Linear(3, 4), mu_init=1.0, sigma_init=0.5)
    with torch.no_grad():
        gated.layer.bias.fill_(10.0)  # every ReLU output positive, so out / z is the gate
        gated.mu.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5]))
        gated.log_sigma.copy_(torch.log(torch.tensor([0.5, 0.2, 1.0, 0.3])))
        gated.since[3] = 0  # frozen
    gated.requires_grad_(False)
    x = torch.randn(20000, 3)
    z = torch.relu(gated.layer(x))
    gated.train()
    gate = gated(x, threshold=1.0, frozen_noise=False) / z
    sigma = gated.log_sigma.exp()
    torch.testing.assert_close(gate[:, :3].mean(0), gated.mu[:3], atol=0.03, rtol=0)
    torch.testing.assert_close(gate[:, :3].std(0), sigma[:3], atol=0, rtol=0.05)
    assert float(torch.corrcoef(gate[:, :3].T).fill_diagonal_(0).abs().max()) < 0.05  # drawn per channel
    torch.testing.assert_close(gate[:, 3], torch.full((len(x),), 1.5))
    gated.eval()  # channel 2, (mu/sigma)^2 = 0.25, is below the threshold
    torch.testing.assert_close(gated(x, threshold=1.0, frozen_noise=False) / z,
                               torch.tensor([1.0, 2.0, 0.0, 1.5]).expand(len(x), 4))


@pytest.mark.parametrize("spec", [MLP, CONV], ids=["mlp", "conv"])
def test_gate_noise_on_free_channels_while_training_two_part_forward(spec):
    """After begin_task (frozen channels compact, free ones on their own): two training forwards of the
    same batch differ on every free output channel that fires, and agree exactly on frozen ones."""
    feats = half_frozen(spec)
    with torch.no_grad():
        for gated in feats.layers:
            gated.log_sigma[~gated.frozen] = math.log(0.3)
    x = images(2, 8, seed=3)[0]
    feats.train()
    assert feats.begin_task()  # the two-part path
    with torch.no_grad():
        a, b = feats(x), feats(x)
    last = feats.layers[-1]
    frozen = feats.input_mask(len(feats.layers), last.frozen)
    assert torch.equal(a[:, frozen], b[:, frozen])
    fires = (a[:, ~frozen] != 0).any(0) & (b[:, ~frozen] != 0).any(0)
    assert bool(fires.any())
    assert bool((a[:, ~frozen] != b[:, ~frozen]).any(0)[fires].all())


@pytest.mark.parametrize("spec", [MLP, CONV], ids=["mlp", "conv"])
def test_grown_tensors_are_on_the_models_device(spec):
    """On the meta device (no GPU needed): every tensor growth makes (layer, gates, buffer, the next
    layer's or the heads' new input weights) must be where the model is; one made on the CPU shows
    as a CPU tensor, or fails to join a meta one."""
    model = IBNet(spec, multi_head=True)
    model.heads["0"] = torch.nn.Linear(model.features.out_features, 2)
    model.to("meta")
    for i in range(len(model.features.layers)):
        model.grow(i, 3)
    assert model.features.widths == [g + 3 for g in IBNet(spec, multi_head=True).features.widths]
    elsewhere = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != "meta"]
    assert elsewhere == []


def test_cap_switches_off_the_new_channels_beyond_the_rate_lowest_first():
    """A task that ends with more new channels than the rate allows (here: every free channel is made
    active just before IB decides, ranked by index): the cap keeps the `rate` best, switches the others
    off (mu = 0) and counts them; only the kept ones freeze. Without the cap all of them would."""
    class AllActive(SupervisedPlugin):
        def after_training_exp(self, strategy, **kwargs):
            with torch.no_grad():
                for g in strategy.model.features.layers:
                    free = ~g.frozen
                    g.mu[free] = 1.0
                    # |mu/sigma| grows with the index, all past the threshold
                    g.log_sigma[free] = -torch.linspace(0.5, 3.0, g.width)[free]

    bench = benchmark(task_il=True, n_tasks=2, per_class=16)
    for cap in (True, False):
        strategy, plugin, _ = strategy_for(MLP, True, {**RATE, "cap": cap}, ADAM, epochs=1, before=(AllActive(),))
        for experience in bench.train_stream:
            frozen_before = [g.frozen.clone() for g in strategy.model.features.layers]
            strategy.train(experience)
            keep = plugin.new_channels()
            report = plugin.task_report()
            for gated, n, before, capped in zip(strategy.model.features.layers, keep, frozen_before,
                                                report["capped"]):
                new = gated.frozen[: len(before)] & ~before
                free = int((~before).sum())
                if cap:
                    assert capped == free - n and int(new.sum()) == n
                    # the n highest-index (highest |mu/sigma|) free channels stay; the rest have mu 0
                    stay = (~before).nonzero().flatten()[-n:]
                    assert bool(new[stay].all())
                    assert bool((gated.mu[: len(before)][~before & ~new] == 0).all())
                else:
                    assert capped == 0 and int(new.sum()) == free


def test_test_time_mask_on_the_compact_forward():
    """At test time the compact forward computes only channels past the threshold (and, for an old
    Task-IL head, those frozen by its task): others output exactly 0 and nothing reads them, whatever
    their weights hold; the rest equal a dense forward with the other channels' gates set to 0."""
    feats = half_frozen(MLP)
    x = images(2, 8, seed=3)[0]
    with torch.no_grad():
        for gated in feats.layers:  # every other free channel below the threshold
            gated.log_sigma[~gated.frozen & (torch.arange(gated.width) % 2 == 0)] = 5.0
    feats.eval()
    calls = []
    kept = feats._kept
    feats._kept = lambda h, keep: calls.append(keep) or kept(h, keep)
    with torch.no_grad():
        out = feats(x)
        old = feats(x, upto=0)
        for upto, result in ((None, out), (0, old)):
            masked = half_frozen(MLP)  # the same network, each excluded channel's gate made exactly 0
            masked.load_state_dict(feats.state_dict())
            for gated in masked.layers:
                off = gated.ratio2() < masked.threshold
                if upto is not None:
                    off |= ~((gated.since >= 0) & (gated.since <= upto))
                gated.mu[off] = 0.0
                gated.log_sigma[off] = 0.0  # ratio 0, below the threshold: the dense gate is 0 too
            masked.eval()
            torch.testing.assert_close(result, dense_features(masked, x), rtol=1e-5, atol=1e-6)
            last = masked.layers[-1]
            assert bool((result[:, last.mu == 0] == 0).all()) and bool((result[:, last.mu != 0] != 0).any())
        # what excluded channels hold is never read: scramble it, the outputs stay
        for gated in feats.layers:
            off = ~((gated.since >= 0) & (gated.since <= 0))
            gated.layer.weight[off] = 1e3
            gated.layer.bias[off] = 1e3
        torch.testing.assert_close(feats(x, upto=0), old, rtol=0, atol=0)
    assert len(calls) == 3  # every forward took the compact path
    # the threshold excluded channels in every layer, the task mask more
    assert all(bool((k == 0).any()) for k in calls[0])


def test_free_channels_weights_biases_and_gates_reinitialised_at_a_tasks_start():
    """What free channels trained on task 1 (here: a marker value put in just after it) is gone when
    task 2's first step runs: weights (every column) and bias freshly initialised, mu and sigma at their
    initial values; frozen channels untouched."""
    marker = 100.0
    seen: dict[str, list] = {}

    class Mark(SupervisedPlugin):  # before IB: runs between task 1's end and IB's re-initialisation
        def before_training_exp(self, strategy, **kwargs):
            if plugin.reports:
                with torch.no_grad():
                    for g in strategy.model.features.layers:
                        free = ~g.frozen
                        g.layer.weight[free] = marker
                        g.layer.bias[free] = marker
                        g.mu[free] = marker
                        g.log_sigma[free] = marker
                seen["frozen"] = [(g.frozen.clone(), g.layer.weight.detach().clone()) for g in strategy.model.features.layers]

        def before_training_iteration(self, strategy, **kwargs):
            if plugin.reports and "first" not in seen:
                seen["first"] = [(g.layer.weight.detach().clone(), g.layer.bias.detach().clone(),
                                  g.mu.detach().clone(), g.log_sigma.detach().clone())
                                 for g in strategy.model.features.layers]

    bench = benchmark(task_il=True, n_tasks=2, per_class=16)
    for spec in (MLP, CONV):
        seen.clear()
        strategy, plugin, _ = strategy_for(spec, True, RATE, ADAM, epochs=1, before=(Mark(),))
        for experience in bench.train_stream:
            strategy.train(experience)
        for (frozen, weight_before), (weight, bias, mu, log_sigma) in zip(seen["frozen"], seen["first"]):
            free = ~frozen
            assert bool(free.any()) and bool(frozen.any())
            fan_in = weight[0].numel()
            bound = 1 / math.sqrt(fan_in)  # torch's default init of a Linear or Conv2d layer
            assert bool((weight[free].abs() <= bound).all()) and bool((bias[free].abs() <= bound).all())
            assert bool((weight[free] != 0).any(dim=tuple(range(1, weight.dim()))).all())
            assert bool((mu[free] == 1.0).all())
            torch.testing.assert_close(log_sigma[free], torch.full_like(log_sigma[free], math.log(0.3)))
            assert torch.equal(weight[frozen], weight_before[frozen])
