"""MagSign per unit, the SA thesis's "MagSign Rewind": sign(mean w_init) · mean w_final per filter.

A unit whose mean incoming weight kept its sign since the comparison step (init) scores its
trained mean's magnitude; one whose sign flipped scores below zero.
"""

from __future__ import annotations

import torch

from ticketlab.sparsity.criteria.base import Criterion, ScoreContext, incoming_weights


class MagnitudeSignUnits(Criterion):
    name = "magnitude_sign_units"
    structured = True
    needs_init = True

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        trained = incoming_weights(ctx)
        initial = incoming_weights(ctx, ctx.init)
        return {group: torch.sign(initial[group].mean(dim=1)) * rows.mean(dim=1) for group, rows in trained.items()}
