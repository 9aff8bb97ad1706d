"""Magnitude increase |w_final| - |w_init| (Zhou et al. 2019, "Deconstructing lottery tickets")."""

from __future__ import annotations

import torch

from ticketlab.sparsity.criteria.base import Criterion, ScoreContext


class MagnitudeIncrease(Criterion):
    name = "magnitude_increase"
    needs_init = True

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        params = ctx.params()
        return {name: params[name].abs() - ctx.init[name].to(params[name].device).abs() for name in ctx.names}
