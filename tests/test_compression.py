"""scripts/compression.py: the controllable-compression experiment on tiny generated CIFAR-10."""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from conftest import REPO_ROOT
from fakedata import write_cifar10

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import compression  # noqa: E402


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_train_per_class=6, n_test_per_class=2)
    return root


def test_presets_met_exactly_per_layer_and_outputs_written(cifar_root, tmp_path, bench_env):
    presets = [0.01, 0.03, 0.25]  # 1% of 32 channels rounds to 0: the layer must keep 1
    out = subprocess.run([sys.executable, "scripts/compression.py", "--data-root", str(cifar_root),
                          "--no-download", "--epochs", "1", "--finetune-epochs", "1", "--batch-size", "16",
                          "--gammas", "1e-4", "--presets", ",".join(map(str, presets)), "--train-subset", "40",
                          "--results", str(tmp_path), "--checkpoint", str(tmp_path / "backbone.pt")],
                         cwd=REPO_ROOT, env=bench_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    stem = "compression-cifar10-convnet32"
    table = (tmp_path / "tables" / f"{stem}.md").read_text()
    assert "N=1 epochs" in table and "M=1 epochs" in table and "a random 40 of its training images" in table
    assert (tmp_path / "plots" / f"{stem}.png").stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "tables" / f"{stem}.csv").open()))
    assert [r["mode"] for r in rows] == ["global", "adaptive", "adaptive", "adaptive"]
    assert all(0 <= float(r["test acc"]) <= 1 and 0 <= float(r["test acc, compressed"]) <= 1 for r in rows)
    assert "R=1 epochs of the kept channels alone" in table
    widths = [layer.width for layer in compression.BACKBONES["convnet32"].layers]
    for row, preset in zip(rows[1:], presets):
        kept = [int(part.split("/")[0]) for part in row["channels kept per layer"].split()]
        assert kept == [max(1, round(preset * w)) for w in widths]
        assert float(row["channels kept"]) == pytest.approx(sum(kept) / sum(widths))
        assert 0 < float(row["params kept"]) < 1
    # the second run reuses the saved backbone
    again = subprocess.run([sys.executable, "scripts/compression.py", "--data-root", str(cifar_root),
                            "--no-download", "--epochs", "1", "--batch-size", "16", "--gammas", "1e-4",
                            "--presets", "", "--train-subset", "40", "--results", str(tmp_path),
                            "--checkpoint", str(tmp_path / "backbone.pt")],
                           cwd=REPO_ROOT, env=bench_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "backbone from" in again.stdout


def test_pruned_network_computes_the_masked_gated_network():
    torch.manual_seed(0)
    spec = compression.BACKBONES["convnet32"]
    net = compression.GatedNet(spec, 10)
    with torch.no_grad():
        for g in net.features.layers:
            g.mu.uniform_(0.5, 2.0)
    keep = [torch.rand(w) < 0.3 for w in net.features.widths]
    for k in keep:
        k[0] = True
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    pruned = compression.pruned_network(net, keep).eval()
    gated = compression.masked(net, keep).eval()
    with torch.no_grad():
        assert torch.allclose(pruned(x), gated(x), atol=1e-5)
    kept = [int(k.sum()) for k in keep]
    n_in = [3, *kept[:3]]
    expected = sum((i * 9 + 1) * o for i, o in zip(n_in, kept[:3]))
    expected += (kept[2] * 16 + 1) * kept[3] + (kept[3] + 1) * 10
    assert compression.count_params(pruned) == expected


def test_bad_arguments_exit_2_before_training(cifar_root, tmp_path, capsys):
    for bad in (["--presets", "0.5,2"], ["--presets", "0"], ["--gammas", "x"], ["--epochs", "0"],
                ["--gammas", "", "--presets", ""], ["--retrain-epochs", "-1"], ["--train-subset", "0"]):
        with pytest.raises(SystemExit) as exc:
            compression.main(["--data-root", str(cifar_root), "--results", str(tmp_path), *bad])
        assert exc.value.code == 2, bad
    code = compression.main(["--data-root", str(tmp_path / "none"), "--no-download", "--results", str(tmp_path)])
    assert code == 2 and "cifar" in capsys.readouterr().err.lower()


def _args(**overrides) -> argparse.Namespace:
    values = dict(lr=1e-3, gate_lr=0.01, batch_size=16, seed=0, device="cpu", finetune_epochs=1, retrain_epochs=1)
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.fixture(scope="module")
def cifar_data(cifar_root):
    from bench.datasets import load_dataset

    return load_dataset("cifar10", cifar_root, download=False)


def test_adaptive_gamma_drives_the_threshold_rule_to_the_preset(cifar_data):
    """Given enough steps, the per-channel gamma makes the channels that pass the threshold exactly the
    preset's top channels in every layer (off-target 0; 10 epochs here, 40 steps, leave dozens off)."""
    big = compression.BACKBONES["convnet32"]
    spec = replace(big, name="small", layers=tuple(replace(layer, width=w)
                                                   for layer, w in zip(big.layers, [8, 16, 16, 32])))
    torch.manual_seed(0)
    base = compression.GatedNet(spec, 10).state_dict()
    torch.manual_seed(0)
    row = compression.run_row(base, spec, 10, cifar_data, _args(finetune_epochs=25), "adaptive", 0.25,
                              full_params=1)
    assert row["kept"] == [2, 4, 4, 8]
    assert row["off-target channels"] == 0
    assert 0 <= row["test acc"] <= 1 and 0 <= row["test acc, compressed"] <= 1


def test_retrain_trains_the_kept_channels_alone(cifar_data):
    """The fine-tune's last part: a plain net of the kept widths (dropped channels gone, no gates), which
    starts as the masked gated net and then trains (its loss on the training data falls)."""
    spec = compression.BACKBONES["convnet32"]
    torch.manual_seed(0)
    net = compression.GatedNet(spec, 10)
    keep = [torch.arange(w) < k for w, k in zip(net.features.widths, [4, 8, 16, 32])]
    x, y = cifar_data.x_train, cifar_data.y_train
    loss = torch.nn.CrossEntropyLoss()
    with torch.no_grad():
        before = float(loss(compression.masked(net, keep).eval()(x), y))
    model = compression.retrain(net, keep, x, y, _args(retrain_epochs=15, lr=0.01))
    assert [layer.weight.shape[0] for layer in model[0].layers] == [4, 8, 16, 32]
    assert not any(n.endswith(("mu", "log_sigma")) for n, _ in model.named_parameters())
    model.eval()
    with torch.no_grad():
        after = float(loss(model(x), y))
    assert after < before - 0.1, (before, after)
    # nothing to retrain where a layer kept no channel: the row is scored as compressed only
    keep[1][:] = False
    assert compression.retrain(net, keep, x, y, _args()) is None
