"""Neighbour moves over a flat keep-vector at fixed sparsity, schedules of their size, and tabu memory.

A move swaps h kept units with h pruned ones: the number kept stays exact and the new mask
lies at Hamming distance 2h from the old. Each layer has a floor (units it always keeps);
only the kept units of layers above their floor may be pruned, so no move takes a layer
below it, and h can never exceed what either side holds.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ticketlab.config import TicketlabError
from ticketlab.search.space import SearchSpace


@dataclass(frozen=True)
class Move:
    """How a candidate differs from a keep-vector scored before: it equals `base` except at the
    indices `flipped` (each listed once). A searcher passes it to Evaluator.score as a hint, so
    that an evaluator which updates a recent mask need not find the flipped units itself;
    `base` must be the very tensor an earlier `score` call received, unchanged since."""

    base: torch.Tensor
    flipped: torch.Tensor  # int64 indices into the keep-vector


class Moves:
    """Swap moves for keep-vectors made of consecutive layers of `sizes` units, layer i keeping at least `floors[i]`."""

    def __init__(self, sizes: Sequence[int], floors: Sequence[int], names: Sequence[str] | None = None):
        self.sizes, self.floors = list(sizes), torch.as_tensor(floors, dtype=torch.long)
        self.names = list(names) if names is not None else [f"layer {i}" for i in range(len(self.sizes))]
        self.layer_of = torch.repeat_interleave(torch.arange(len(self.sizes)), torch.tensor(self.sizes))

    @classmethod
    def from_space(cls, space: SearchSpace, layer_min: float) -> Moves:
        """The moves of a search space whose layers keep at least space.layer_floor(layer_min) units each."""
        return cls([layer.size for layer in space.layers], space.layer_floor(layer_min),
                   [layer.name for layer in space.layers])

    def kept_per_layer(self, keep: torch.Tensor) -> torch.Tensor:
        return torch.stack([part.sum() for part in keep.split(self.sizes)])

    def check(self, keep: torch.Tensor, what: str = "the mask") -> None:
        """Raise a one-line error if `keep` takes some layer below its floor, or no move can change it."""
        kept = self.kept_per_layer(keep)
        below = (kept < self.floors).nonzero().flatten().tolist()
        if below:
            layer = below[0]
            raise TicketlabError(f"{what} keeps {int(kept[layer])} units of {self.names[layer]}, below its floor of "
                                 f"{int(self.floors[layer])}; lower --layer-min or start from a random mask")
        if self.max_h(keep) < 1:
            raise TicketlabError(f"no move can change {what}: every unit it could prune holds a layer at its floor "
                                 "(or nothing is pruned); lower --layer-min or change the sparsity")

    def max_h(self, keep: torch.Tensor) -> int:
        """The largest h a move can swap: no more than the pruned units, nor the kept ones above their floors."""
        slack = int((self.kept_per_layer(keep) - self.floors).clamp(min=0).sum())
        return min(slack, len(keep) - int(keep.sum()))

    def neighbour(self, keep: torch.Tensor, h: int, generator: torch.Generator) -> torch.Tensor:
        """A copy of `keep` with h random pruned units kept and h random kept units pruned
        (only from layers above their floor)."""
        return self.move(keep, h, generator)[0]

    def move(self, keep: torch.Tensor, h: int, generator: torch.Generator) -> tuple[torch.Tensor, Move]:
        """The neighbour `neighbour` draws (the same draws), and the Move from `keep` to it."""
        limit = self.max_h(keep)
        if not 1 <= h <= limit:
            raise TicketlabError(f"a move cannot swap h = {h} units here: 1 to {limit} can be (the pruned units, and "
                                 "the kept ones above their layers' floors)")
        slack, kept = self.kept_per_layer(keep) - self.floors, int(keep.sum())
        if bool((slack >= h).all()):  # no floor can be reached
            out = _sample(keep, kept, h, generator)
        else:  # a random order of the kept units, without those that would take their layer below its floor
            order = keep.nonzero().flatten()[torch.randperm(kept, generator=generator)]
            layers = self.layer_of[order]
            out = order[_rank_within_layer(layers) < slack[layers]][:h]
        into = _sample(~keep, len(keep) - kept, h, generator)
        new = keep.clone()
        new[out] = False
        new[into] = True
        return new, Move(keep, torch.cat([out, into]))


def _sample(members: torch.Tensor, count: int, h: int, generator: torch.Generator) -> torch.Tensor:
    """h distinct random indices where `members` (holding `count` True) is True, in random order.

    Few among many are drawn with replacement and rejected (nonmembers) or merged (repeats):
    the distinct members drawn are a uniformly random set, so h of them in random order are
    too; this avoids listing and permuting hundreds of thousands of units per move.
    """
    if 4 * h > count:
        return members.nonzero().flatten()[torch.randperm(count, generator=generator)[:h]]
    draws = int(2 * h * len(members) / count) + 16
    while True:
        found = torch.randint(len(members), (draws,), generator=generator)
        found = torch.unique(found[members[found]])
        if len(found) >= h:
            return found[torch.randperm(len(found), generator=generator)[:h]]


def _rank_within_layer(layers: torch.Tensor) -> torch.Tensor:
    """For each entry, how many entries before it belong to the same layer."""
    order = torch.argsort(layers, stable=True)
    grouped = layers[order]
    rank = torch.empty_like(layers)
    rank[order] = torch.arange(len(layers)) - torch.searchsorted(grouped, grouped)
    return rank


def next_h(h: int, peak: int, decay: float, sawtooth: bool) -> tuple[int, int]:
    """One temperature step of the neighbourhood size h, and the sawtooth's current peak.

    Geometric: h shrinks by `decay` (at least to 1). Sawtooth (the thesis): when h falls
    below half of the last peak, it jumps back up to 75% of that peak, which becomes the
    new peak, so h decays in ever smaller teeth down to 1.
    """
    h = max(1, int(h * decay))
    if sawtooth and h < peak * 0.5:
        h = peak = int(peak * 0.75)
    return h, peak


class Tabu:
    """The last `size` masks tried; a candidate is `seen` if it equals one (exact) or, with
    radius "hamming" (the thesis's MLP rule), lies within Hamming distance h of one."""

    def __init__(self, size: int, radius: str = "exact", memory: Sequence = ()):
        self.size, self.radius = size, radius
        self.memory: deque = deque(memory, maxlen=size)

    def _key(self, keep: torch.Tensor):  # noqa: ANN202 (a digest, or the mask itself)
        if self.radius == "hamming":
            return keep.clone()
        return hashlib.blake2b(keep.numpy().tobytes(), digest_size=16).hexdigest()

    def seen(self, keep: torch.Tensor, h: int) -> bool:
        if self.radius == "hamming":
            return any(int((keep != other).sum()) < h for other in self.memory)
        return self._key(keep) in self.memory

    def add(self, keep: torch.Tensor) -> None:
        if self.size > 0:
            self.memory.append(self._key(keep))
