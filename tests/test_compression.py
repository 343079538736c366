"""scripts/compression.py: the controllable-compression experiment on tiny generated CIFAR-10."""
from __future__ import annotations

import csv
import subprocess
import sys

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
                          "--gammas", "1e-4", "--presets", ",".join(map(str, presets)),
                          "--results", str(tmp_path), "--checkpoint", str(tmp_path / "backbone.pt")],
                         cwd=REPO_ROOT, env=bench_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    stem = "compression-cifar10-convnet32"
    table = (tmp_path / "tables" / f"{stem}.md").read_text()
    assert "N=1 epochs" in table and "M=1 epochs" in table
    assert (tmp_path / "plots" / f"{stem}.png").stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "tables" / f"{stem}.csv").open()))
    assert [r["mode"] for r in rows] == ["global", "adaptive", "adaptive", "adaptive"]
    widths = [layer.width for layer in compression.BACKBONES["convnet32"].layers]
    for row, preset in zip(rows[1:], presets):
        kept = [int(part.split("/")[0]) for part in row["channels kept per layer"].split()]
        assert kept == [max(1, round(preset * w)) for w in widths]
        assert float(row["channels kept"]) == pytest.approx(sum(kept) / sum(widths))
        assert 0 < float(row["params kept"]) < 1
    # the second run reuses the saved backbone
    again = subprocess.run([sys.executable, "scripts/compression.py", "--data-root", str(cifar_root),
                            "--no-download", "--epochs", "1", "--batch-size", "16", "--gammas", "1e-4",
                            "--presets", "", "--results", str(tmp_path),
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
                ["--gammas", "", "--presets", ""]):
        with pytest.raises(SystemExit) as exc:
            compression.main(["--data-root", str(cifar_root), "--results", str(tmp_path), *bad])
        assert exc.value.code == 2, bad
    code = compression.main(["--data-root", str(tmp_path / "none"), "--no-download", "--results", str(tmp_path)])
    assert code == 2 and "cifar" in capsys.readouterr().err.lower()
