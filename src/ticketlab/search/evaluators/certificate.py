"""The accuracy certificate of the evaluators whose sums run in another order than the reference's.

An evaluator that computes logits in another order (delta updates, live channels only) gets
them within float rounding of the reference's. Its accuracy is nonetheless the reference's
exactly when every image whose two largest logits are within 2 * tolerance of each other
(each logit within `tolerance` of the reference's) is predicted again by an exact forward
pass, computed as the reference computes it. The recount runs in blocks of RECOUNT_BLOCK
images of the image's batch of SCORE_BATCH: an image's logits are the same bits in any block
of at least 4 images on the CPUs tested (1 or 2 take other kernels), for Linear layers and
convolutions alike; tests/test_search_evaluator.py checks it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ticketlab.search.reference import SCORE_BATCH

RECOUNT_BLOCK = 32
TOLERANCE = 1e-5  # the largest logit drift a certificate allows for, relative to the largest |logit|


def near_tied(logits: torch.Tensor, largest: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Indices of the images (rows of images x classes logits) whose largest logit (`largest`,
    one per image) has another within 2 * tolerance of it: too close to call."""
    return ((logits >= (largest - 2 * tolerance)[:, None]).sum(1) > 1).nonzero().flatten()


def recount_blocks(images: torch.Tensor, n: int) -> torch.Tensor:
    """The first image of each block of RECOUNT_BLOCK images (fewer only where the reference's
    batch itself is smaller) that together hold `images`, of n images in all."""
    batch_start = images // SCORE_BATCH * SCORE_BATCH
    batch_end = (batch_start + SCORE_BATCH).clamp(max=n)
    start = batch_start + (images - batch_start) // RECOUNT_BLOCK * RECOUNT_BLOCK
    return torch.minimum(start, (batch_end - RECOUNT_BLOCK).clamp(min=0)).maximum(batch_start).unique()


def certified_accuracy(logits: torch.Tensor, labels: torch.Tensor, tolerance: float,
                       exact_logits: Callable[[int, int], torch.Tensor]) -> tuple[float, int]:
    """The reference's accuracy from logits (images x classes) within `tolerance` of its own,
    and how many near-tied images were predicted again from exact_logits(start, end), the
    exact logits of images start..end-1."""
    # max, not argmax: on a transposed (classes x images) view argmax took 8x as long on the CPU
    # tested. Both pick the first of equal maxima, and an image with equal maxima is near-tied anyway.
    largest, predicted = logits.max(1)
    near = near_tied(logits, largest, tolerance)
    if len(near):
        n = len(logits)
        for start in recount_blocks(near, n).tolist():
            end = min(start + RECOUNT_BLOCK, (start // SCORE_BATCH + 1) * SCORE_BATCH, n)
            chosen = near[(near >= start) & (near < end)]
            predicted[chosen] = exact_logits(start, end).argmax(1).index_select(0, chosen - start)
    return int((predicted == labels).sum()) / len(labels), len(near)
