"""CIFAR's standard training augmentation on whole batches of tensors: random crop and horizontal flip.

Every sample gets its own crop offset (the image zero-padded by 4 pixels, then a
crop of the original size) and its own coin for a left-right flip, drawn from a
generator seeded with the cell's seed. The draws advance with every batch, so
each epoch sees fresh ones and a rerun sees the same ones. Doing it as one
gather on the batch keeps it far cheaper than torchvision's per-sample PIL path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class CropFlip:
    """Callable on an (N, C, H, W) batch; returns an augmented batch of the same shape, samples in order."""

    def __init__(self, seed: int, padding: int = 4):
        self.padding = padding
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.padding
        offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=self.generator)
        flip = torch.rand(n, generator=self.generator) < 0.5
        rows = offsets[:, :1] + torch.arange(h)  # (n, h): the padded rows each sample keeps
        cols = torch.arange(w).expand(n, w)
        cols = torch.where(flip[:, None], cols.flip(1), cols) + offsets[:, 1:]
        rows, cols = rows.to(x.device), cols.to(x.device)
        padded = F.pad(x, (p, p, p, p))
        index = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]
