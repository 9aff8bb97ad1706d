"""How alike masks are: matrices over any set of masks of one model (criteria, searches, seeds,
checkpoints), with random masks of the same per-layer sparsity as the floor.

The SA thesis compared masks by the cosine similarity of their flattened keep-vectors; the
Jaccard index of the kept sets and the normalised Hamming distance are beside it. For 0/1 vectors
a, b: cosine = |a ∧ b| / sqrt(|a| |b|), Jaccard = |a ∧ b| / |a ∨ b|, Hamming = mean(a ≠ b).
Masks are compared over the parameters both cover. A mask is equal to itself (cosine 1, Jaccard 1, Hamming 0); complementary masks share nothing
(0, 0, 1). Two random masks keeping a fraction p of every layer each have expected cosine and
Jaccard of about p and p / (2 - p) (over layers of unequal sparsity, Σ k²/n / Σ k for the cosine):
a similarity means something only above that floor, which is why random masks are in every matrix.

`mask_similarity` is the cached stage: the three matrices of labelled mask runs and their floor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ticketlab import paths
from ticketlab.config import Runtime, TicketlabError
from ticketlab.sparsity.mask import Mask
from ticketlab.stage import Stage
from ticketlab.store import atomic_write_json, find_run, read_json

MASK_KINDS = ("prune", "search", "level", "control", "ticket")  # the runs that hold a mask.safetensors
Labelled = Sequence[tuple[str, str]]  # (label, mask run), in the order shown

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


def load_masks(runs: Labelled, runs_dir: str | None) -> dict[str, Mask]:
    """Each label's mask, read (and verified) from the finished run that holds it."""
    masks = {}
    for label, ref in runs:
        path, _ = find_run(ref, MASK_KINDS, runs_dir)
        masks[label] = Mask.load(path / paths.MASK)
    return masks


@dataclass
class SimilarityRun(Stage):
    """The cosine, Jaccard and Hamming matrices of labelled masks and their random floor."""

    KIND = "similarity"
    ARTIFACTS = (paths.SIMILARITY,)

    def matrices(self) -> dict[str, Any]:
        """labels (the masks', then the floor's), and a matrix per measure in that order."""
        return read_json(self.run.file(paths.SIMILARITY))

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        return f"similarity of {', '.join(label for label, _ in hparams['masks'])} and {hparams['random']} random", {}


def similarity_identity(runs: Labelled, random: int = 2, seed: int = 0) -> dict[str, Any]:
    identity: dict[str, Any] = {"masks": [list(pair) for pair in runs], "random": random}
    if seed:
        identity["seed"] = seed
    return identity


def mask_similarity(runs: Labelled, runtime: Runtime = Runtime(), random: int = 2, seed: int = 0) -> SimilarityRun:
    """The similarity matrices of the masks of `runs` (label, run) and `random` floor masks; or the
    finished run with the same inputs."""
    result = SimilarityRun(SimilarityRun.run_for(similarity_identity(runs, random, seed), runtime.runs_dir))

    def prepare() -> tuple[dict[str, Any], dict[str, Mask]]:
        masks = with_random_floor(load_masks(runs, runtime.runs_dir), random, seed)
        return {"masks": [list(pair) for pair in runs], "random": random, "seed": seed}, masks

    def write(masks: dict[str, Mask]) -> dict[str, Any]:
        atomic_write_json(result.run.file(paths.SIMILARITY),
                          {"labels": list(masks), **{measure: similarity_matrix(masks, measure) for measure in MEASURES}})
        return {"labels": list(masks)}

    result.produce(runtime.force, prepare, write)
    return result
