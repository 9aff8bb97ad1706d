"""What the REINFORCE agent sees of each unit of a search space: a few numbers from the checkpoint's weights.

One row per unit of the space (a filter/neuron, or a single weight), in the space's order:

0. magnitude, min-max normalised within the unit's layer: mean |w| of a unit's incoming
   weights (search per filter: the l1_norm criterion's score), |w| of a weight;
1. the same magnitude over its mean across the whole space, log1p'd: per-layer normalisation
   alone would hide which layers are strong, which a global choice needs;
2. BatchNorm scale |γ| min-max normalised within the layer; 0 everywhere unless every
   channel group passes through a BatchNorm, and per weight (no BatchNorm belongs to a
   single weight);
3. the layer's position, index / (layers - 1), 0 for a single layer;
4. the layer's size, log(size) / log(largest layer's size).

Nothing here depends on data; gradients are left out (the issue makes them optional).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.search.space import SearchSpace
from ticketlab.sparsity.criteria import ScoreContext
from ticketlab.sparsity.criteria.base import incoming_weights
from ticketlab.sparsity.criteria.bn_scale import group_scales
from ticketlab.sparsity.mask import prunable_names

FEATURES = ("magnitude", "relative magnitude", "bn scale", "position", "size")


def _minmax(values: torch.Tensor) -> torch.Tensor:
    spread = values.max() - values.min()
    return (values - values.min()) / spread if spread > 0 else torch.zeros_like(values)


def _per_unit(model: nn.Module, space: SearchSpace) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each layer's raw magnitude and BatchNorm scale per unit (the scale is 0 where there is none)."""
    if space.granularity == "weight":
        params = dict(model.named_parameters())
        magnitude = {layer.name: params[layer.name].detach().abs().flatten().float() for layer in space.layers}
        return magnitude, {name: torch.zeros_like(m) for name, m in magnitude.items()}
    ctx = ScoreContext(model=model, names=prunable_names(model))
    magnitude = {group: rows.abs().mean(dim=1).float() for group, rows in incoming_weights(ctx).items()}
    scales = group_scales(ctx)
    if any(s is None for s in scales.values()):  # some group without a BatchNorm: the feature carries nothing
        return magnitude, {name: torch.zeros_like(m) for name, m in magnitude.items()}
    return magnitude, {group: s.float() for group, s in scales.items()}


@torch.no_grad()
def unit_features(model: nn.Module, space: SearchSpace) -> torch.Tensor:
    """(space.size, len(FEATURES)) float32 features of every unit of `space` from `model`'s weights (on the CPU)."""
    magnitude, scale = _per_unit(model, space)
    missing = [layer.name for layer in space.layers if layer.name not in magnitude]
    if missing:
        raise TicketlabError(f"no weights for the search space's layers {', '.join(missing[:3])}; "
                             "expected the space of this model")
    raw = torch.cat([magnitude[layer.name].cpu() for layer in space.layers])
    overall = float(raw.mean()) or 1.0
    largest = max(layer.size for layer in space.layers)
    rows = []
    for i, layer in enumerate(space.layers):
        m, s = magnitude[layer.name].cpu(), scale[layer.name].cpu()
        position = i / (len(space.layers) - 1) if len(space.layers) > 1 else 0.0
        size = math.log(layer.size) / math.log(largest) if largest > 1 else 1.0
        rows.append(torch.stack([_minmax(m), torch.log1p(m / overall), _minmax(s),
                                 torch.full_like(m, position), torch.full_like(m, size)], dim=1))
    return torch.cat(rows).float()
