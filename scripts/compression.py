"""Controllable compression on CIFAR-10 (reference section III (b), Tables 4 and 5).

    python scripts/compression.py --data-root DIR [--epochs 3] [--finetune-epochs 1] [--retrain-epochs 1]
        [--backbone convnet32|vgg16] [--gammas 2e-5,5e-5,1e-4] [--presets 0.02,0.03,0.04]
        [--train-subset N] [--results results] [--checkpoint FILE] [--threads 1] [--device cpu]

The whole CIFAR-10 training set is one task. The IB-gated backbone is trained
for N epochs (gates on, no sparsity term); every row then starts from that
same trained state and fine-tunes in two parts:

1. M epochs of weights and gates with the sparsity term, in one of two modes:
   * global: gamma * sum log(1 + (mu/sigma)^2), one gamma per row (reference Table 4);
   * adaptive: a per-channel gamma driven to a preset kept fraction of each layer's
     channels (reference Table 5, the IB method's controller and constants); a layer
     keeps round(fraction * width) channels, at least 1.
2. R epochs of the kept channels alone: the dropped channels removed, each kept gate's
   mu folded into the next layer's input weights, no gates, no sparsity term.

Why the second part: while the gates train, a dropped channel (mu ~ 0, sigma > 0) still
passes ``sigma * eps * z`` on, and after the next ReLU that noise carries |z|, so the
layers above learn to read channels that the test-time gate then removes. Measured on
CIFAR-10 with convnet32 (N=3), a 4% preset and part 1 on 10,000 training images: on the
10,000 test images the training-mode (noisy) net scored 45.4%, and 43.5% with the kept
channels noise-free and the dropped ones passing nothing but their noise (mu set to 0),
while the kept channels alone were at chance (10.0%). The reference's Table 5 reports the
kept network's accuracy; part 2 lets it adapt to the removal of the rest. Both modes get
part 2 alike; the table shows the accuracy after part 1 too.

Each network is scored with its dropped channels physically removed and its parameters
counted.

The defaults (convnet32, N=3, M=1, R=1, five gammas, five presets) are sized for one CPU core
at 1 thread: ~25 minutes from the costs this script measured on a quiet core (gated net 77-91 s
per epoch, pruned nets 5-19 s per epoch at up to 30% of the channels, a test pass 5-12 s), up to
~40 minutes if an epoch costs 130 s as in a micro-benchmark on a busier machine. Writes results/tables/compression-cifar10-<backbone>.md (and .csv) and
results/plots/compression-cifar10-<backbone>.png.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.models import BACKBONES, BackboneSpec, FeatureNet, count_params  # noqa: E402

DATASET = "cifar10"
REFERENCE_GAMMAS = (2e-5, 5e-5, 1e-4)  # Table 4
REFERENCE_PRESETS = (0.04, 0.03, 0.02)  # Table 5
# Beyond the reference's rows, for the small default backbone (convnet32, N=3, M=1 on the CIFAR-10 copy):
# its 2e-5..1e-4 keep most channels (1e-4: 66%), 1e-3 kept 30% and 1e-2 emptied three of four layers;
# its first layer has 32 channels, where 2% is 1 channel, hence presets 10% and 25% too. Five presets and
# five gammas keep the whole run within about 40 minutes on one core (estimate in the docstring).
DEFAULT_GAMMAS = (*REFERENCE_GAMMAS, 3e-4, 1e-3)
DEFAULT_PRESETS = (*REFERENCE_PRESETS, 0.1, 0.25)


class GatedNet(nn.Module):
    """IB-gated hidden layers and one linear classifier: CIFAR-10 as a single task."""

    def __init__(self, spec: BackboneSpec, n_classes: int):
        super().__init__()
        from strategies.ib import DEFAULTS
        from strategies.ib.network import IBFeatures

        self.features = IBFeatures(spec, threshold=DEFAULTS["threshold"], mu_init=DEFAULTS["mu_init"],
                                   sigma_init=DEFAULTS["sigma_init"])
        self.head = nn.Linear(self.features.out_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def global_penalty(net: GatedNet, gamma: float) -> Callable[[], torch.Tensor]:
    layers = net.features.layers
    return lambda: gamma * sum(g.information().sum() for g in layers)


def adaptive_gamma(net: GatedNet, keep: list[int]):
    """The per-channel gamma controller of the IB method (its default constants): `.penalty()`
    for the loss, `.step()` after each optimizer step."""
    from strategies.ib.gamma import AdaptiveGamma

    return AdaptiveGamma(net.features.layers, keep, threshold=net.features.threshold)


def top_channels(gated, k: int) -> torch.Tensor:
    """Mask of the k channels with the largest |mu/sigma| (the reference's ideal mask b)."""
    mask = torch.zeros(gated.width, dtype=torch.bool, device=gated.mu.device)
    mask[torch.topk(gated.ratio2(), k).indices] = True
    return mask


def preset_keep(widths: Sequence[int], fraction: float) -> list[int]:
    """Channels a layer keeps at a preset fraction: rounded, at least 1."""
    return [max(1, round(fraction * w)) for w in widths]


# ---------------------------------------------------------------- training and scoring

def fit(model: nn.Module, groups: list[dict], x: torch.Tensor, y: torch.Tensor, epochs: int, args,
        penalty: Optional[Callable[[], torch.Tensor]] = None, step: Optional[Callable[[], None]] = None
        ) -> None:
    """Adam on `groups` for `epochs` over (x, y), cross-entropy plus `penalty()`; `step()` after each step."""
    opt = torch.optim.Adam(groups)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(args.seed)
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(args.batch_size):
            loss = loss_fn(model(x[idx].to(args.device)), y[idx].to(args.device))
            if penalty is not None:
                loss = loss + penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step is not None:
                step()
        print(f"  epoch {epoch + 1}/{epochs}: {time.perf_counter() - start:.0f} s", flush=True)


def train(net: GatedNet, x: torch.Tensor, y: torch.Tensor, epochs: int, args,
          penalty: Optional[Callable[[], torch.Tensor]] = None, step: Optional[Callable[[], None]] = None
          ) -> None:
    """Weights and gates together; the gates get their own lr and no weight decay, as in the IB plugin."""
    gates = [p for g in net.features.layers for p in (g.mu, g.log_sigma)]
    ids = {id(p) for p in gates}
    weights = [p for p in net.parameters() if id(p) not in ids]
    fit(net, [{"params": weights, "lr": args.lr}, {"params": gates, "lr": args.gate_lr, "weight_decay": 0.0}],
        x, y, epochs, args, penalty, step)


def retrain(net: GatedNet, keep: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, args
            ) -> Optional[nn.Module]:
    """The fine-tune's last part: the kept channels alone, dropped ones removed and gates folded into
    the weights, train for --retrain-epochs (None where the pruned net cannot be built).

    Why: while the gates train, a dropped channel (mu ~ 0) still passes ``sigma * eps * z`` on, and
    after the next ReLU that noise carries |z|: the layers above learn to read it, so the kept
    channels alone, as scored, can be at chance although the noisy net is not.
    """
    if not prunable(net, keep):
        return None
    model = pruned_network(net, keep)
    if args.retrain_epochs:
        fit(model, [{"params": list(model.parameters()), "lr": args.lr}], x, y, args.retrain_epochs, args)
    return model


def pruned_network(net: GatedNet, keep: list[torch.Tensor]) -> nn.Module:
    """A plain network holding only the kept channels, each gate's mu folded into the next layer."""
    feats = net.features
    spec = feats.spec
    small = replace(spec, layers=tuple(replace(layer, width=int(k.sum()))
                                       for layer, k in zip(spec.layers, keep)))
    body = FeatureNet(small)
    head = nn.Linear(small.out_features, net.head.out_features)
    with torch.no_grad():
        scale = None  # per input of the current layer: the previous layer's gate on it
        for i, (gated, dst) in enumerate(zip(feats.layers, body.layers)):
            w = gated.layer.weight[keep[i]]
            if i > 0:
                cols = feats.input_mask(i, keep[i - 1])
                w = w[:, cols] * _as_columns(scale, w)
            dst.weight.copy_(w)
            dst.bias.copy_(gated.layer.bias[keep[i]])
            scale = gated.mu[keep[i]]
            if not gated.conv or i + 1 == len(feats.layers) or not feats.layers[i + 1].conv:
                scale = scale.repeat_interleave(feats.spatial[i])
        cols = feats.input_mask(len(feats.layers), keep[-1])
        head.weight.copy_(net.head.weight[:, cols] * scale)
        head.bias.copy_(net.head.bias)
    return nn.Sequential(body, head).to(next(net.parameters()).device)


def _as_columns(scale: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return scale.view(1, -1, *([1] * (w.dim() - 2)))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), batch):
            out = model(x[start:start + batch].to(device))
            correct += int((out.argmax(1).cpu() == y[start:start + batch]).sum())
    return correct / len(y)


def masked(net: GatedNet, keep: list[torch.Tensor]) -> GatedNet:
    """A copy of the gated net whose test-time gate is mu on the kept channels and 0 elsewhere."""
    out = copy.deepcopy(net)
    out.features.threshold = 0.0
    with torch.no_grad():
        for gated, k in zip(out.features.layers, keep):
            gated.mu[~k] = 0.0
    return out


def prunable(net: GatedNet, keep: list[torch.Tensor]) -> bool:
    """Whether `pruned_network` computes the masked gated net: no layer lost every channel (a
    zero-width conv cannot compute the constant net), and no negative gate precedes a max-pool
    (it cannot be folded past the pool)."""
    return all(bool(k.any()) for k in keep) and not _negative_pooled(net, keep)


def score(net: GatedNet, keep: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, device: str
          ) -> tuple[float, int]:
    """(test accuracy, parameters) of the network with the channels outside `keep` removed."""
    pruned = pruned_network(net, keep)
    params = count_params(pruned)
    if prunable(net, keep):
        return accuracy(pruned, x, y, device), params
    # the masked gated net with the same channels zeroed computes the same function
    print("  scored by the masked gated net (empty layer or negative gate before a pool)")
    return accuracy(masked(net, keep), x, y, device), params


def _negative_pooled(net: GatedNet, keep: list[torch.Tensor]) -> bool:
    return any(bool((g.mu[k] < 0).any()) for g, layer, k in zip(net.features.layers, net.features.spec.layers, keep)
               if layer.pool)


# ---------------------------------------------------------------- the experiment

def run_row(base: dict, spec: BackboneSpec, n_classes: int, data, args, mode: str, value: float,
            full_params: int) -> dict:
    net = GatedNet(spec, n_classes).to(args.device)
    net.load_state_dict(base)
    widths = net.features.widths
    start = time.perf_counter()
    if mode == "global":
        train(net, data.x_train, data.y_train, args.finetune_epochs, args, penalty=global_penalty(net, value))
        keep = net.features.active()
        off = None
    else:
        target = preset_keep(widths, value)
        control = adaptive_gamma(net, target)
        train(net, data.x_train, data.y_train, args.finetune_epochs, args,
              penalty=control.penalty, step=control.step)
        keep = [top_channels(g, k) for g, k in zip(net.features.layers, target)]
        # channels where the threshold rule disagrees with the preset (0 once gamma has converged)
        off = sum(int((k != a).sum()) for k, a in zip(keep, net.features.active()))
    seconds = time.perf_counter() - start
    # scored as compressed (the kept channels alone, not retrained), then after the retrain
    acc_compressed, params = score(net, keep, data.x_test, data.y_test, args.device)
    start = time.perf_counter()
    model = retrain(net, keep, data.x_train, data.y_train, args)
    seconds += time.perf_counter() - start
    acc = accuracy(model, data.x_test, data.y_test, args.device) if model is not None else float("nan")
    kept = [int(k.sum()) for k in keep]
    return {"mode": mode, "setting": f"gamma {value:g}" if mode == "global" else f"preset {value:.0%}",
            "value": value, "kept": kept, "widths": widths,
            "channels kept per layer": " ".join(f"{k}/{w}" for k, w in zip(kept, widths)),
            "channels kept": sum(kept) / sum(widths), "params kept": params / full_params,
            "off-target channels": off, "test acc, compressed": acc_compressed, "test acc": acc,
            "time (s)": seconds}


def backbone_state(spec: BackboneSpec, n_classes: int, data, args) -> tuple[dict, float]:
    """The trained backbone's state (from --checkpoint when it was made with the same settings)."""
    meta = {k: getattr(args, k) for k in ("backbone", "epochs", "seed", "lr", "gate_lr", "batch_size",
                                          "train_subset")}
    path = Path(args.checkpoint) if args.checkpoint else None
    if path is not None and path.is_file():
        saved = torch.load(path, map_location=args.device, weights_only=True)
        if saved.get("meta") == meta:
            print(f"backbone from {path}")
            return saved["state"], saved["seconds"]
        print(f"{path} was made with other settings ({saved.get('meta')}): training anew")
    net = GatedNet(spec, n_classes).to(args.device)
    start = time.perf_counter()
    train(net, data.x_train, data.y_train, args.epochs, args)
    seconds = time.perf_counter() - start
    state = copy.deepcopy(net.state_dict())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"meta": meta, "state": state, "seconds": seconds}, path)
    return state, seconds


def caption(args, spec: BackboneSpec, base_acc: float, base_seconds: float, full_params: int,
            official: bool, n_train: int) -> str:
    data = "official files" if official else "files that differ from the official ones (unofficial copy)"
    images = (f"a random {n_train} of its training images" if args.train_subset
              else f"its whole training set ({n_train} images)")
    return (f"Controllable compression on CIFAR-10 ({data}), {images} as one task. "
            f"Backbone {spec.name} ({len(spec.layers)} hidden layers, no batch norm, {full_params} parameters "
            f"without gates) trained N={args.epochs} epochs with IB gates and no sparsity term "
            f"({base_seconds:.0f} s; test accuracy {base_acc:.2%} with every channel). Each row fine-tunes "
            f"from it in two parts: M={args.finetune_epochs} epochs of weights and gates with the sparsity "
            f"term, global gamma (reference Table 4) or adaptive per-channel gamma driven to a preset kept "
            f"fraction of each layer's channels, rounded, at least 1 (Table 5; the IB method's constants); "
            f"then R={args.retrain_epochs} epochs of the kept channels alone, the dropped ones removed and the "
            f"gates folded into the weights (a dropped channel still passes its gate noise on while the gates "
            f"train, and the layers above learn to read it). Kept: the channels the threshold rule keeps "
            f"(global) or the preset's top |mu/sigma| (adaptive); off-target: channels where the threshold "
            f"rule disagrees with the preset at the end of the first part. Params kept: parameters of the "
            f"pruned net over the full net's. Test accuracy of the pruned net after the first part "
            f"(compressed) and after the second (test acc; '-': not retrained, a layer kept no channel or "
            f"a negative gate precedes a pool). Time: training, both parts. Seed {args.seed}, batch {args.batch_size}, "
            f"Adam lr {args.lr}, gate lr {args.gate_lr}, {args.threads} thread(s), device {args.device}.")


def write_outputs(rows: list[dict], text: str, results: Path, spec: BackboneSpec, base_acc: float
                  ) -> list[Path]:
    import pandas as pd

    from bench.files import atomic_write
    from bench.plots import save_png
    from bench.tables import markdown_table

    cols = ["mode", "setting", "channels kept per layer", "channels kept", "params kept",
            "off-target channels", "test acc, compressed", "test acc", "time (s)"]
    frame = pd.DataFrame(rows)[cols]
    shown = frame.copy()
    for col in ("channels kept", "params kept", "test acc, compressed", "test acc"):
        shown[col] = ["-" if v != v else f"{v:.2%}" for v in frame[col]]
    shown["off-target channels"] = ["" if v is None or v != v else str(int(v)) for v in frame["off-target channels"]]
    shown["time (s)"] = [f"{v:.0f}" for v in frame["time (s)"]]
    stem = f"compression-{DATASET}-{spec.name}"
    paths = [atomic_write(results / "tables" / f"{stem}.md", f"{text}\n\n{markdown_table(shown)}"),
             atomic_write(results / "tables" / f"{stem}.csv", frame.to_csv(index=False))]

    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for mode, marker in (("global", "o"), ("adaptive", "s")):
            part = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["channels kept"])
            if not part:
                continue
            xs = [100 * r["channels kept"] for r in part]
            ys = [100 * r["test acc"] for r in part]
            label = "global gamma" if mode == "global" else "adaptive gamma (preset)"
            line, = ax.plot(xs, ys, marker=marker, label=f"{label}, retrained")
            ax.plot(xs, [100 * r["test acc, compressed"] for r in part], marker=marker, linestyle=":",
                    fillstyle="none", color=line.get_color(), alpha=0.6, label=f"{label}, compressed only")
            for x, y, r in zip(xs, ys, part):
                ax.annotate(r["setting"].split()[1], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axhline(100 * base_acc, color="grey", linestyle="--", linewidth=1, label="backbone, every channel")
        ax.set_xscale("log")
        ticks = [1, 2, 5, 10, 20, 50, 100]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("channels kept (% of all hidden channels, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"CIFAR-10, {spec.name}: accuracy against kept fraction")
        ax.legend(fontsize=8)
        paths.append(save_png(fig, results / "plots" / f"{stem}.png"))
    finally:
        plt.close(fig)
    return paths


def fractions(text: str, name: str, low: float, high: float) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected comma-separated numbers, got {text!r}") from None
    bad = [v for v in values if not low <= v <= high or (name == "--presets" and v == 0)]
    if bad:
        raise argparse.ArgumentTypeError(f"{name}: {bad} outside [{low}, {high}]" +
                                         (" (and 0 keeps nothing)" if name == "--presets" else ""))
    return values


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    spec_names = [n for n, s in BACKBONES.items() if s.in_shape == (3, 32, 32)]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="data root holding cifar-10-batches-py/")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing files")
    p.add_argument("--backbone", default="convnet32", choices=spec_names)
    p.add_argument("--epochs", type=int, default=3, help="N: epochs of backbone training")
    p.add_argument("--finetune-epochs", type=int, default=1,
                   help="M: epochs of each fine-tune of weights and gates with the sparsity term")
    p.add_argument("--retrain-epochs", type=int, default=1,
                   help="R: epochs of the fine-tune's last part, the kept channels alone (0: none)")
    p.add_argument("--train-subset", type=int, help="train on this many training images only, drawn with "
                   "the seed (for quick trials; the caption says so)")
    p.add_argument("--gammas", type=lambda t: fractions(t, "--gammas", 0.0, 1.0),
                   default=list(DEFAULT_GAMMAS), help="global gammas, comma-separated ('' for none)")
    p.add_argument("--presets", type=lambda t: fractions(t, "--presets", 0.0, 1.0),
                   default=list(DEFAULT_PRESETS), help="preset kept fractions, comma-separated ('' for none)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gate-lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default="results", help="writes tables/ and plots/ under it")
    p.add_argument("--checkpoint", help="trained backbone: loaded when made with the same settings, else written")
    args = p.parse_args(argv)
    for name in ("epochs", "finetune_epochs", "batch_size", "threads", "train_subset"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.retrain_epochs < 0:
        p.error("--retrain-epochs must be at least 0")
    for name in ("lr", "gate_lr"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if not args.gammas and not args.presets:
        p.error("nothing to run: --gammas and --presets are both empty")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from bench.datasets import DataError, load_dataset

    try:
        data = load_dataset(DATASET, args.data_root, download=not args.no_download)
        results = Path(args.results)
        for sub in ("tables", "plots"):
            (results / sub).mkdir(parents=True, exist_ok=True)
    except (DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = BACKBONES[args.backbone]
    if tuple(data.x_train.shape[1:]) != spec.in_shape or len(data.y_test) == 0:
        print(f"error: {args.data_root}: expected images of shape {spec.in_shape}, "
              f"got {tuple(data.x_train.shape[1:])}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n_classes = data.n_classes
    if args.train_subset and args.train_subset < len(data.y_train):
        pick = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(args.seed))
        data = replace(data, x_train=data.x_train[pick[:args.train_subset]],
                       y_train=data.y_train[pick[:args.train_subset]])
    full_params = count_params(FeatureNet(spec)) + count_params(nn.Linear(spec.out_features, n_classes))

    base, base_seconds = backbone_state(spec, n_classes, data, args)
    reference = GatedNet(spec, n_classes).to(args.device)
    reference.load_state_dict(base)
    every = [torch.ones(w, dtype=torch.bool, device=args.device) for w in reference.features.widths]
    base_acc, _ = score(reference, every, data.x_test, data.y_test, args.device)
    print(f"backbone {spec.name}: {args.epochs} epochs, {base_seconds:.0f} s, test accuracy {base_acc:.2%}")

    text = caption(args, spec, base_acc, base_seconds, full_params, data.official, len(data.y_train))
    rows: list[dict] = []
    for mode, values in (("global", args.gammas), ("adaptive", args.presets)):
        for value in values:
            torch.manual_seed(args.seed)
            row = run_row(base, spec, n_classes, data, args, mode, value, full_params)
            rows.append(row)
            print(f"{row['mode']:8s} {row['setting']:14s} kept {row['channels kept per layer']} "
                  f"({row['channels kept']:.2%} channels, {row['params kept']:.2%} params) "
                  f"acc {row['test acc, compressed']:.2%} compressed, {row['test acc']:.2%} retrained, "
                  f"{row['time (s)']:.0f} s", flush=True)
            # rewritten after every row, so an interrupted run keeps the rows it finished
            paths = write_outputs(rows, text, results, spec, base_acc)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
