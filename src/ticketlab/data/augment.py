"""CIFAR-style augmentation of a training batch: pad 4, random crop, random horizontal flip."""

from __future__ import annotations

from collections.abc import Sequence

import torch

PAD = 4


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, *, fill: float | Sequence[float] = 0.0
) -> torch.Tensor:
    """Each image of x (N, C, H, W) padded by 4 pixels, cropped back to H x W at a random
    offset, and flipped left-right with probability 1/2.

    All randomness comes from `generator` (a CPU generator, whatever x's device), so a run
    is reproducible and can resume from the generator's state. The padding value `fill`
    (one number, or one per channel) is in x's space: on normalised images the default 0
    is the data set's mean colour. For torchvision's padding with black (pad before
    normalising), pass -mean/std per channel.
    """
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * PAD + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    # For every output pixel, the source pixel in the unpadded image; outside it is padding.
    rows = offsets[0, :, None] - PAD + torch.arange(h)  # (n, h)
    cols = offsets[1, :, None] - PAD + torch.arange(w)  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    rows, cols = rows.to(x.device), cols.to(x.device)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    source = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # (n, h, w)
    out = x.reshape(n, c, h * w).gather(2, source.reshape(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
    fill_value = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return torch.where(inside[:, None], out, fill_value)
