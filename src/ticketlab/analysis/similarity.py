"""How alike masks are: matrices over any set of masks of one model (criteria, searches, seeds,
checkpoints), with random masks of the same per-layer sparsity as the floor.

The SA thesis compared masks by the cosine similarity of their flattened keep-vectors; the
Jaccard index of the kept sets and the normalised Hamming distance are beside it. For 0/1 vectors
a, b: cosine = |a ∧ b| / sqrt(|a| |b|), Jaccard = |a ∧ b| / |a ∨ b|, Hamming = mean(a ≠ b).
Masks are compared over the parameters both cover. A mask is equal to itself (cosine 1, Jaccard 1, Hamming 0); complementary masks share nothing
(0, 0, 1). Two random masks keeping a fraction p of every layer each have expected cosine and
Jaccard of about p and p / (2 - p) (over layers of unequal sparsity, Σ k²/n / Σ k for the cosine):
a similarity means something only above that floor, which is why random masks are in every matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from ticketlab.config import TicketlabError
from ticketlab.sparsity.mask import Mask

RANDOM_PREFIX = "random"  # the labels of the floor's masks: random-1, random-2, ...


def _counts(a: Mask, b: Mask) -> tuple[int, int, int, int]:
    """Entries kept by both, by a, by b, and in all, over the parameters both masks cover (a
    structured mask covers biases too, a weight mask only weights)."""
    common = [name for name in a if name in b]
    if not common or any(a[n].shape != b[n].shape for n in common):
        raise TicketlabError("masks cover different parameters or shapes; similarity compares masks of one model")
    both = sum(int((a[n] & b[n]).sum()) for n in common)
    kept_a, kept_b = (sum(int(m[n].sum()) for n in common) for m in (a, b))
    return both, kept_a, kept_b, sum(a[n].numel() for n in common)


def cosine(a: Mask, b: Mask) -> float:
    both, kept_a, kept_b, _ = _counts(a, b)
    return both / math.sqrt(kept_a * kept_b) if kept_a and kept_b else 0.0


def jaccard(a: Mask, b: Mask) -> float:
    both, kept_a, kept_b, _ = _counts(a, b)
    union = kept_a + kept_b - both
    return both / union if union else 1.0  # two empty masks are the same mask


def hamming(a: Mask, b: Mask) -> float:
    both, kept_a, kept_b, total = _counts(a, b)
    return (kept_a + kept_b - 2 * both) / total if total else 0.0


MEASURES: dict[str, Callable[[Mask, Mask], float]] = {"cosine": cosine, "jaccard": jaccard, "hamming": hamming}


def with_random_floor(masks: Mapping[str, Mask], count: int = 2, seed: int = 0) -> dict[str, Mask]:
    """The masks, then `count` random masks keeping as many entries of each layer as the first one."""
    if not masks:
        raise TicketlabError("similarity needs at least one mask")
    if count < 0:
        raise TicketlabError(f"the number of random masks must be 0 or more, got {count}")
    first = next(iter(masks.values()))
    generator = torch.Generator().manual_seed(seed)
    clash = [label for label in masks if label.startswith(f"{RANDOM_PREFIX}-")]
    if clash and count:
        raise TicketlabError(f"mask label {clash[0]!r} is taken by the random floor; rename it")
    return {**masks, **{f"{RANDOM_PREFIX}-{i + 1}": first.shuffled(generator) for i in range(count)}}


def similarity_matrix(masks: Mapping[str, Mask], measure: str = "cosine") -> list[list[float]]:
    """The measure between every pair of masks, in the order given (symmetric; its diagonal 1, or 0
    for the Hamming distance)."""
    if measure not in MEASURES:
        raise TicketlabError(f"unknown similarity measure {measure!r}; expected one of {', '.join(MEASURES)}")
    of = MEASURES[measure]
    values = list(masks.values())
    matrix = [[0.0] * len(values) for _ in values]
    for i, a in enumerate(values):
        for j in range(i, len(values)):
            matrix[i][j] = matrix[j][i] = of(a, values[j])
    return matrix
