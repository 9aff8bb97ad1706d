"""The searchable units of a model as one flat boolean vector (True = kept).

A search works on this vector; `to_mask` turns it into a Mask over the model's parameters.
Two granularities, as in the EEE 198 thesis: single weights (its MLP mode: every weight of
LeNet-300-100, output layer included) and whole units (its CNN mode: the filters of
BasicCNN, expanded by the model's channel groups to biases, BatchNorm and next-layer inputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.models.tracing import channel_groups
from ticketlab.sparsity.mask import Mask, prunable_names


class Layer(NamedTuple):
    """One layer (a parameter, or a channel group) and its slice of the flat vector."""

    name: str
    slice: slice

    @property
    def size(self) -> int:
        return self.slice.stop - self.slice.start


class SearchSpace:
    """The searchable units of a model as one flat boolean vector (True = kept)."""

    def __init__(self, layers: list[Layer], expand: Callable[[dict[str, torch.Tensor]], Mask],
                 project: Callable[[Mask, Layer], torch.Tensor], granularity: str,
                 soften: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None):
        self.layers = layers
        self.size = layers[-1].slice.stop if layers else 0
        self.granularity = granularity  # "weight" or "filter"
        self._expand, self._project, self._soften = expand, project, soften

    def __repr__(self) -> str:
        return f"SearchSpace({self.granularity}, {self.size} units in {len(self.layers)} layers)"

    def split(self, keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each layer's part of a flat keep-vector."""
        if keep.shape != (self.size,):
            raise TicketlabError(f"a keep-vector of this space has shape ({self.size},), not {tuple(keep.shape)}")
        keep = keep.to("cpu", torch.bool).clone()  # the Mask must not change with the caller's vector
        return {layer.name: keep[layer.slice] for layer in self.layers}

    def to_mask(self, keep: torch.Tensor) -> Mask:
        """The Mask over the model's parameters that a flat keep-vector stands for."""
        return self._expand(self.split(keep))

    def to_soft_mask(self, values: torch.Tensor) -> dict[str, torch.Tensor]:
        """What `to_mask` gives, for a float vector (one value per unit) and differentiable in
        it: each parameter's entries times the values of the units that cover them (1 and 0
        give `to_mask`'s mask as floats). For searchers that learn masks by gradient."""
        if self._soften is None:
            raise TicketlabError(f"{self!r} has no differentiable mask")
        if values.shape != (self.size,):
            raise TicketlabError(f"a vector of this space has shape ({self.size},), not {tuple(values.shape)}")
        return self._soften({layer.name: values[layer.slice] for layer in self.layers})

    def from_mask(self, mask: Mask) -> torch.Tensor:
        """The flat keep-vector of a Mask (a criterion's, say); for units, a unit is kept when
        any of its own entries is (its weights, bias or BatchNorm scale)."""
        return torch.cat([self._project(mask, layer) for layer in self.layers])

    def layer_floor(self, layer_min: float) -> list[int]:
        """The fewest units each layer keeps: a fraction `layer_min` of it, and at least one."""
        if not 0 <= layer_min <= 1:
            raise TicketlabError(f"layer_min is a fraction of each layer, in [0, 1]; got {layer_min}")
        return [max(1, math.ceil(layer_min * layer.size)) for layer in self.layers]

    def kept_and_floors(self, sparsity: float, layer_min: float) -> tuple[int, list[int]]:
        """How many units a mask at `sparsity` keeps, exactly, and each layer's floor; refused
        when the floors need more."""
        floors = self.layer_floor(layer_min)
        kept = self.size - round(self.size * sparsity)
        if kept < sum(floors):
            raise TicketlabError(f"sparsity {sparsity} keeps {kept} units, fewer than the {sum(floors)} the layers' "
                                 f"floors need (layer_min {layer_min}, at least 1 unit a layer)")
        return kept, floors

    def random(self, sparsity: float, generator: torch.Generator, layer_min: float = 0.0) -> torch.Tensor:
        """A random keep-vector with exactly round(size * sparsity) units pruned, no layer below its floor.

        Each layer's floor is drawn first, uniformly within the layer; the rest of the kept
        units are then drawn uniformly from all the others.
        """
        if not 0 <= sparsity < 1:
            raise TicketlabError(f"sparsity is the fraction of units pruned, in [0, 1); got {sparsity}")
        kept, floors = self.kept_and_floors(sparsity, layer_min)
        keep = torch.zeros(self.size, dtype=torch.bool)
        for layer, floor in zip(self.layers, floors):
            keep[layer.slice.start + torch.randperm(layer.size, generator=generator)[:floor]] = True
        rest = (~keep).nonzero().flatten()
        keep[rest[torch.randperm(len(rest), generator=generator)[:kept - sum(floors)]]] = True
        return keep


def _layers(sizes: dict[str, int]) -> list[Layer]:
    layers, start = [], 0
    for name, size in sizes.items():
        layers.append(Layer(name, slice(start, start + size)))
        start += size
    return layers


def weight_space(model: nn.Module, names: list[str] | None = None) -> SearchSpace:
    """One unit per weight of `names` (default: the prunable weights, output layer included,
    as the thesis's MLP mode did)."""
    params = dict(model.named_parameters())
    names = prunable_names(model) if names is None else names
    unknown = [n for n in names if n not in params]
    if unknown:
        raise TicketlabError(f"the model has no parameter {', '.join(unknown)}")
    shapes = {n: params[n].shape for n in names}

    def expand(parts: dict[str, torch.Tensor]) -> Mask:
        return Mask({n: parts[n].view(shapes[n]) for n in names})

    def project(mask: Mask, layer: Layer) -> torch.Tensor:
        if layer.name not in mask:
            raise TicketlabError(f"the mask does not cover {layer.name}; expected a mask over {', '.join(names)}")
        return mask[layer.name].flatten()

    def soften(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: parts[n].view(shapes[n]) for n in names}

    return SearchSpace(_layers({n: params[n].numel() for n in names}), expand, project, "weight", soften)


def unit_space(model: nn.Module) -> SearchSpace:
    """One unit per neuron, filter or channel of the model's channel groups (not the output layer).

    `to_mask` gives what `unit_mask_to_mask` gives, with one index_fill per parameter slice
    instead of one fill per pruned unit (1 ms instead of 24 for BasicCNN's 960 filters).
    """
    groups = {g.name: g for g in channel_groups(model)}
    params = dict(model.named_parameters())
    # Running statistics are buffers, which masks do not cover.
    pieces = [(g.name, s) for g in groups.values() for s in (*g.producers, *g.consumers) if s.param in params]
    names = list(dict.fromkeys([*prunable_names(model), *(s.param for _, s in pieces)]))
    # indices[i][u]: the indices along the piece's dim that unit u of its group spans
    indices = [(s.offset + torch.arange(groups[g].size))[:, None] * s.block + torch.arange(s.block) for g, s in pieces]

    def expand(parts: dict[str, torch.Tensor]) -> Mask:
        tensors = {n: torch.ones(params[n].shape, dtype=torch.bool) for n in names}
        for (group, piece), index in zip(pieces, indices):
            tensors[piece.param].index_fill_(piece.dim, index[~parts[group]].flatten(), False)
        return Mask(tensors)

    def project(mask: Mask, layer: Layer) -> torch.Tensor:
        group = groups[layer.name]
        keep = torch.zeros(group.size, dtype=torch.bool)
        covered = [s for s in group.producers if s.param in mask]
        if not covered:
            raise TicketlabError(f"the mask covers none of the parameters of {layer.name}")
        for piece in covered:
            # one row per unit: its `block` entries along piece.dim, and everything across
            entries = mask[piece.param].movedim(piece.dim, 0)
            start = piece.offset * piece.block
            keep |= entries[start:start + group.size * piece.block].reshape(group.size, -1).any(1)
        return keep

    def soften(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        factors: dict[str, torch.Tensor] = {}
        for group, piece in pieces:
            length = params[piece.param].shape[piece.dim]
            start, stop = piece.offset * piece.block, (piece.offset + groups[group].size) * piece.block
            values = parts[group].repeat_interleave(piece.block)
            along = torch.cat([values.new_ones(start), values, values.new_ones(length - stop)])
            shape = [1] * params[piece.param].dim()
            shape[piece.dim] = length
            factor = along.view(shape)
            factors[piece.param] = factor if piece.param not in factors else factors[piece.param] * factor
        like = next(iter(parts.values()))
        return {n: factors[n].expand(params[n].shape) if n in factors else like.new_ones(params[n].shape)
                for n in names}

    return SearchSpace(_layers({name: g.size for name, g in groups.items()}), expand, project, "filter", soften)
