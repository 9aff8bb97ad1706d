"""Orthogonality of masked initial weights, layer by layer (Lee et al. 2020, as the SA thesis used it).

For a layer's weights W, out × in (a conv layer's as out × in·k·h), the score is mean((WᵀW − I)²):
0 for orthonormal columns, growing as the columns shrink, grow or correlate. A mask that leaves
the initial weights far from orthogonal propagates signals badly, and its ticket trains worse.

`mask_orthogonality` is the cached stage: the table of labelled mask runs, their random floor and
the unmasked weights, at one checkpoint of one training.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ticketlab import paths
from ticketlab.analysis.similarity import Labelled, load_masks, with_random_floor
from ticketlab.config import Runtime, TicketlabError
from ticketlab.sparsity.mask import Mask
from ticketlab.stage import Stage
from ticketlab.store import atomic_write_text, csv_text, read_csv
from ticketlab.training.stage import find_train_run

UNMASKED = "dense (no mask)"


def orthogonality(weight: torch.Tensor) -> float:
    """mean((WᵀW − I)²) of the weight read as out × in."""
    if weight.dim() < 2:
        raise TicketlabError(f"orthogonality needs a weight matrix or a conv kernel, got shape {tuple(weight.shape)}")
    matrix = weight.detach().double().reshape(weight.shape[0], -1)
    gram = matrix.T @ matrix
    return float(((gram - torch.eye(gram.shape[0], dtype=gram.dtype)) ** 2).mean())


def orthogonality_scores(weights: Mapping[str, torch.Tensor], mask: Mask) -> dict[str, float]:
    """The score of each masked layer's weights under the mask, in the mask's order."""
    missing = [name for name in mask if name not in weights]
    if missing:
        raise TicketlabError(f"the weights have no {missing[0]!r}, which the mask covers; expected the mask's model")
    return {name: orthogonality(weights[name] * mask[name]) for name in mask if weights[name].dim() >= 2}


def orthogonality_table(weights: Mapping[str, torch.Tensor], masks: Mapping[str, Mask]) -> list[dict[str, Any]]:
    """One row per mask (its label under `mask`, its score per weight layer, and their `mean`),
    then the unmasked weights' row, the reference."""
    first = next(iter(masks.values()))
    unmasked = Mask({name: torch.ones_like(keep) for name, keep in first.items()})
    rows = []
    for label, mask in {**masks, UNMASKED: unmasked}.items():
        scores = orthogonality_scores(weights, mask)
        rows.append({"mask": label, **scores, "mean": statistics.fmean(scores.values())})
    return rows


@dataclass
class OrthogonalityRun(Stage):
    """The orthogonality table of labelled masks, their random floor and the unmasked weights."""

    KIND = "orthogonality"
    ARTIFACTS = (paths.ORTHOGONALITY_TABLE,)

    @functools.cached_property
    def rows(self) -> list[dict[str, Any]]:
        return [{key: value if key == "mask" else float(value) for key, value in row.items()}
                for row in read_csv(self.run.file(paths.ORTHOGONALITY_TABLE))]

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        return (f"orthogonality of {', '.join(label for label, _ in hparams['masks'])} on {hparams['train']} at "
                f"{hparams['step']}", {})


def orthogonality_identity(runs: Labelled, train: str, step: str, random: int = 2, seed: int = 0) -> dict[str, Any]:
    identity: dict[str, Any] = {"masks": [list(pair) for pair in runs], "train": train, "step": step,
                                "random": random}
    if seed:
        identity["seed"] = seed
    return identity


def mask_orthogonality(runs: Labelled, train: str, step: str = "0it", runtime: Runtime = Runtime(), random: int = 2,
                       seed: int = 0) -> OrthogonalityRun:
    """The orthogonality of training `train`'s weights at `step` under each mask of `runs` (label,
    run) and under `random` floor masks; or the finished run with the same inputs."""
    result = OrthogonalityRun(OrthogonalityRun.run_for(orthogonality_identity(runs, train, step, random, seed),
                                                       runtime.runs_dir))

    def prepare() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        weights = find_train_run(train, runtime.runs_dir).state_dict(step)
        rows = orthogonality_table(weights, with_random_floor(load_masks(runs, runtime.runs_dir), random, seed))
        return {"masks": [list(pair) for pair in runs], "train": train, "step": step, "random": random}, rows

    def write(rows: list[dict[str, Any]]) -> dict[str, Any]:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        atomic_write_text(result.run.file(paths.ORTHOGONALITY_TABLE), csv_text(rows, columns))
        return {"masks": len(rows) - 1}

    result.produce(runtime.force, prepare, write)
    return result
