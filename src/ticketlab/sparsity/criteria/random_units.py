"""Random scores per unit: the structured control (the SA thesis's "Random" per filter)."""

from __future__ import annotations

import torch

from ticketlab.config import TicketlabError
from ticketlab.models.tracing import channel_groups
from ticketlab.sparsity.criteria.base import Criterion, ScoreContext


class RandomUnits(Criterion):
    name = "random_units"
    structured = True

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        if ctx.generator is None:
            raise TicketlabError("criterion random_units needs ScoreContext.generator (a seeded torch.Generator), "
                                 "so that its masks can be reproduced")
        return {group.name: torch.rand(group.size, generator=ctx.generator) for group in channel_groups(ctx.model)}
