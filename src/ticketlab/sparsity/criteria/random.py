"""Random scores: the control every criterion is compared with."""

from __future__ import annotations

import torch

from ticketlab.config import TicketlabError
from ticketlab.sparsity.criteria.base import Criterion, ScoreContext


class Random(Criterion):
    name = "random"

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        if ctx.generator is None:
            raise TicketlabError("criterion random needs ScoreContext.generator (a seeded torch.Generator), "
                                 "so that its masks can be reproduced")
        params = ctx.params()
        return {name: torch.rand(params[name].shape, generator=ctx.generator) for name in ctx.names}
