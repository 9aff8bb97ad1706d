"""L1 norm per unit: the mean |w| of the unit's incoming weights (the SA thesis's "Mag" per filter).

The mean rather than the sum, so that units of layers with different fan-in compare under
global selection; per layer the two rank alike.
"""

from __future__ import annotations

import torch

from ticketlab.sparsity.criteria.base import Criterion, ScoreContext, incoming_weights


class L1Norm(Criterion):
    name = "l1_norm"
    structured = True

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        return {group: rows.abs().mean(dim=1) for group, rows in incoming_weights(ctx).items()}
