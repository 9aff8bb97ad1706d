"""augment_batch: pad 4, random crop, random horizontal flip, reproducible from a generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ticketlab.data import augment_batch

torch.set_num_threads(1)


def batch(n: int = 32, c: int = 3, size: int = 8) -> torch.Tensor:
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(0))


def candidates(image: torch.Tensor, fill: float = 0.0) -> list[torch.Tensor]:
    """All 81 crops of the padded image, each flipped and not."""
    _, h, w = image.shape
    padded = F.pad(image, (4, 4, 4, 4), value=fill)
    crops = [padded[:, i : i + h, j : j + w] for i in range(9) for j in range(9)]
    return crops + [crop.flip(2) for crop in crops]


def test_every_image_is_a_flip_and_crop_of_its_padded_original():
    x = batch()
    out = augment_batch(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    for image, augmented in zip(x, out):
        assert any(torch.equal(augmented, candidate) for candidate in candidates(image))


def test_same_seed_same_batch_other_seed_other_batch():
    x = batch()
    first = augment_batch(x, torch.Generator().manual_seed(7))
    assert torch.equal(first, augment_batch(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, augment_batch(x, torch.Generator().manual_seed(8)))


def test_resuming_from_a_saved_generator_state_repeats_the_batch():
    generator = torch.Generator().manual_seed(3)
    augment_batch(batch(), generator)
    state = generator.get_state()
    following = augment_batch(batch(), generator)
    generator.set_state(state)
    assert torch.equal(augment_batch(batch(), generator), following)


def test_offsets_and_flips_are_spread():
    x = batch(n=128)
    out = augment_batch(x, torch.Generator().manual_seed(2))
    # Which of the 162 crop-and-flip candidates each output is: index // 81 says flipped.
    chosen = [
        next(k for k, candidate in enumerate(candidates(image)) if torch.equal(augmented, candidate))
        for image, augmented in zip(x, out)
    ]
    flipped = sum(k >= 81 for k in chosen) / len(chosen)
    assert 0.35 < flipped < 0.65
    assert len({k % 81 for k in chosen}) > 50  # many of the 81 offsets occur
    assert (out != x).flatten(1).any(1).float().mean() > 0.95


def test_fill_per_channel():
    x = torch.ones(64, 3, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(4), fill=(-1.0, -2.0, -3.0))
    for channel, value in enumerate((-1.0, -2.0, -3.0)):
        assert set(out[:, channel].unique().tolist()) == {value, 1.0}
