"""Annealing over per-layer budgets: a second search space, as NNI's annealing pruner searched it.

A mask here is a number of units kept per layer; inside each layer the units kept are the
best-ranked by the start criterion (cfg.start: magnitude-sign's trained scores by default),
so the search space is the budgets alone: a few numbers, where the mask space has one bit per
unit. A move shifts h units of budget from one layer to another: the h lowest-ranked kept
units of the first are pruned and the h best-ranked pruned units of the second are kept. The
total kept stays exact, every layer stays at or above its floor, and the start mask (the
criterion's global selection) is already of this form. Everything else is annealing's:
acceptance, temperature, the adaptive move size, tabu memory, restarts, resumption.

Why try it: the per-weight search fits its 1,024 images (held-out accuracy stops rising after
a few hundred evaluations, RESULTS.md), and a search over a handful of budgets has little to
fit with. What it found is in RESULTS.md.
"""

from __future__ import annotations

from typing import Any

import torch

from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search.anneal import DEFAULT_START, Annealer, Plan, plan_for
from ticketlab.search.base import Evaluator, Searcher, SearchState, UnitData
from ticketlab.search.moves import Move


class LayerBudget(Annealer):
    """Simulated annealing over how many units each layer keeps (see the module doc)."""

    name = "layer-budget"
    label = "layer budgets"
    needs_scores = True

    def __init__(self, evaluator: Evaluator, plan: Plan, cfg: SearchConfig, generator: torch.Generator,
                 scores: torch.Tensor):
        super().__init__(evaluator, plan, cfg, generator)
        space = evaluator.space
        if len(scores) != space.size:
            raise TicketlabError(f"scores for {len(scores)} units, but the space has {space.size}")
        if len(space.layers) < 2:
            raise TicketlabError("a layer-budget search needs at least two layers to move units between")
        # Each layer's units, best first (ties: the lower index first).
        self.ranked = [layer.slice.start + torch.sort(scores[layer.slice], descending=True, stable=True).indices
                       for layer in space.layers]

    @classmethod
    def defaults(cls, cfg: SearchConfig) -> dict[str, Any]:
        # Always a criterion's start: the ranking inside each layer is its scores.
        return {"start": DEFAULT_START[cfg.granularity],
                "neighbourhood": "sawtooth" if cfg.mode == "thesis" else "adaptive"}

    @classmethod
    def build(cls, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator, units: UnitData) -> Searcher:
        if units.scores is None:
            raise TicketlabError("layer-budget needs the start criterion's scores of the units")
        return cls(evaluator, plan_for(cfg), cfg, generator, units.scores)

    def begin(self, start: torch.Tensor | None) -> SearchState:
        return super().begin(self.ranked_mask(self.moves.kept_per_layer(start.to("cpu", torch.bool))))

    def ranked_mask(self, budgets: torch.Tensor) -> torch.Tensor:
        """The keep-vector that keeps the `budgets[l]` best-ranked units of each layer l."""
        keep = torch.zeros(self.evaluator.space.size, dtype=torch.bool)
        for order, budget in zip(self.ranked, budgets.tolist()):
            keep[order[:budget]] = True
        return keep

    def draw(self, keep: torch.Tensor, h: int) -> tuple[torch.Tensor, Move]:
        """h units of budget (fewer where the layers hold fewer) moved from a random layer with
        units above its floor to another random layer with units pruned."""
        budgets = self.moves.kept_per_layer(keep)
        sizes = torch.tensor(self.moves.sizes)
        givers = ((budgets - self.moves.floors) > 0).nonzero().flatten()
        giver = int(givers[torch.randint(len(givers), (), generator=self.generator)])
        takers = ((budgets < sizes) & (torch.arange(len(sizes)) != giver)).nonzero().flatten()
        if not len(takers):  # only the giver has pruned units: nothing can move
            raise TicketlabError("no layer but one has pruned units: a layer-budget move has nowhere to go")
        taker = int(takers[torch.randint(len(takers), (), generator=self.generator)])
        h = min(h, int(budgets[giver] - self.moves.floors[giver]), int(sizes[taker] - budgets[taker]))
        out = self.ranked[giver][int(budgets[giver]) - h:int(budgets[giver])]
        into = self.ranked[taker][int(budgets[taker]):int(budgets[taker]) + h]
        candidate = keep.clone()
        candidate[out] = False
        candidate[into] = True
        return candidate, Move(keep, torch.cat([out, into]))
