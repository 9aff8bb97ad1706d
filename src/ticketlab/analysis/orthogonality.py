"""Orthogonality of masked initial weights, layer by layer (Lee et al. 2020, as the SA thesis used it).

For a layer's weights W, out × in (a conv layer's as out × in·k·h), the score is mean((WᵀW − I)²):
0 for orthonormal columns, growing as the columns shrink, grow or correlate. A mask that leaves
the initial weights far from orthogonal propagates signals badly, and its ticket trains worse.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ticketlab.config import TicketlabError
from ticketlab.sparsity.mask import Mask


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
