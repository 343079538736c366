"""P&C's compress phase on augmented views: its teacher is the active column over a frozen knowledge base."""
import copy

import pytest
import torch
import torch.nn.functional as F

from bench import models
from bench.augment import CropFlip
from strategies.pnc.network import CompressPlugin, PnCNet


@pytest.fixture
def kl_targets(monkeypatch) -> list[torch.Tensor]:
    """The targets of every F.kl_div call from here on: the compress phase's teacher outputs."""
    targets, kl_div = [], F.kl_div

    def spy(input, target, **kwargs):
        targets.append(target.detach().clone())
        return kl_div(input, target, **kwargs)

    monkeypatch.setattr(F, "kl_div", spy)
    return targets


def test_compress_trains_on_augmented_views_against_a_frozen_teacher(kl_targets):
    torch.manual_seed(0)
    model = PnCNet(models.BACKBONES["mlp"], 2)
    model.kb_heads["0"] = torch.nn.Linear(400, 2)
    frozen = copy.deepcopy(model)  # the network as progress left it
    x = torch.randint(0, 256, (24, 1, 28, 28), dtype=torch.uint8)
    crop_flip, views = CropFlip(seed=0), []

    def augment(batch):
        views.append(crop_flip(batch))
        return views[-1]

    plugin = CompressPlugin(lambda ps: torch.optim.Adam(ps, lr=1e-2), 2, 0.0, 1.0, batch_size=8)
    plugin.compress(model, 0, x, "cpu", augment)
    assert len(views) == len(kl_targets) == 6  # every batch of both epochs is a fresh view
    assert not any(torch.equal(v, x[:8]) for v in views)
    assert any(not torch.equal(a, b) for a, b in zip(frozen.kb.parameters(), model.kb.parameters()))
    with torch.no_grad():  # each target: the active column over the knowledge base before compress
        for view, target in zip(views, kl_targets):
            assert torch.allclose(target, F.log_softmax(frozen.active_logits(view), 1), atol=1e-5)
    report = plugin._report(model, 0)
    assert report["compress_kl_first_batch"] > 0 and report["compress_kl_last_batch"] >= 0


def test_pnc_compress_targets_are_the_active_column_as_progress_left_it(kl_targets):
    """The active column's laterals read the knowledge base; the targets must not move as it trains."""
    torch.manual_seed(0)
    model = PnCNet(models.BACKBONES["mlp"], 2)
    model.kb_heads["0"] = torch.nn.Linear(400, 2)
    x = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8).expand(32, -1, -1, -1)  # one image
    with torch.no_grad():
        teacher = F.log_softmax(model.active_logits(x[:1]), 1)
    plugin = CompressPlugin(lambda ps: torch.optim.Adam(ps, lr=1e-2), 2, 0.0, 1.0, batch_size=8)
    plugin.compress(model, 0, x, "cpu")
    assert len(kl_targets) == 8
    assert all(torch.allclose(t, teacher.expand_as(t), atol=1e-6) for t in kl_targets)
