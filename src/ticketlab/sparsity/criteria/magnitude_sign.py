"""Large final, same sign (Zhou et al. 2019, "Deconstructing lottery tickets").

Keeps the weights of large final magnitude whose sign is that of their initial value
(w_final · w_init >= 0, as in the SA thesis); sign-flipped weights are pruned first.
"""

from __future__ import annotations

import torch

from ticketlab.sparsity.criteria.base import Criterion, ScoreContext


class MagnitudeSign(Criterion):
    name = "magnitude_sign"
    needs_init = True

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        params = ctx.params()
        scores = {}
        for name in ctx.names:
            final = params[name]
            magnitude = final.abs()
            same_sign = final * ctx.init[name].to(final.device) >= 0
            # Flipped weights map into [-1, 0): below every same-sign score, still ordered by |w_final|.
            scores[name] = torch.where(same_sign, magnitude, -1 / (1 + magnitude))
        return scores
