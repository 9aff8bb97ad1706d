"""Magnitude |w|: the lottery-ticket criterion (Frankle & Carbin 2019)."""

from __future__ import annotations

import torch

from ticketlab.sparsity.criteria.base import Criterion, ScoreContext


class Magnitude(Criterion):
    name = "magnitude"

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        params = ctx.params()
        return {name: params[name].abs() for name in ctx.names}
