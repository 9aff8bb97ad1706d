"""L2 norm per unit, normalised by fan-in: the root mean square of the unit's incoming weights.

That is ‖w‖₂ / √fan-in, so that, as with l1_norm, units of layers with different fan-in
compare under global selection; per layer it ranks units exactly as the plain L2 norm of the
network-pruning seed does.
"""

from __future__ import annotations

import torch

from ticketlab.sparsity.criteria.base import Criterion, ScoreContext, incoming_weights


class L2Norm(Criterion):
    name = "l2_norm"
    structured = True

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        return {group: rows.square().mean(dim=1).sqrt() for group, rows in incoming_weights(ctx).items()}
