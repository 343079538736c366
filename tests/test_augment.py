"""CIFAR augmentation on tensor batches: per-sample random crop (4-px zero padding) and flip, seeded."""
import torch
import torch.nn.functional as F

from bench.augment import CropFlip


def candidates(image: torch.Tensor, p: int = 4) -> list[torch.Tensor]:
    """Every crop of the padded image, plain and mirrored."""
    padded = F.pad(image, (p, p, p, p))
    h, w = image.shape[-2:]
    crops = [padded[:, i:i + h, j:j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]
    return crops + [c.flip(-1) for c in crops]


def batch(n: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) + 5  # no zeros inside


def test_same_seed_same_draws_and_epochs_differ():
    x = batch()
    a, b = CropFlip(seed=3), CropFlip(seed=3)
    first, again = a(x), b(x)
    assert torch.equal(first, again)
    assert not torch.equal(a(x), first)  # the next epoch draws afresh
    assert not torch.equal(CropFlip(seed=4)(x), first)


def test_each_sample_is_a_crop_or_mirror_of_itself_in_order():
    x = batch(8)
    out = CropFlip(seed=0)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(len(x)):
        assert any(torch.equal(out[i], c) for c in candidates(x[i])), f"sample {i} is not its own crop"


def test_samples_of_one_batch_get_their_own_offsets_and_flips():
    x = batch(1).expand(64, -1, -1, -1).contiguous()  # one image 64 times
    out = CropFlip(seed=0)(x)
    distinct = {tuple(o.flatten()[:4096].tolist()) for o in out}
    assert len(distinct) > 20
    flipped = sum(any(torch.equal(o, c) for c in candidates(x[0])[81:]) for o in out)
    assert 10 < flipped < 54  # about half mirrored
