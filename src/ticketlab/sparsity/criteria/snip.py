"""SNIP (Lee et al. 2019): connection sensitivity |dL/dm| = |w * dL/dw| at mask m = 1.

The loss gradient is summed over the validation batches before the absolute value is taken,
as Synaptic-Flow's port of SNIP does (Lee et al. scored one batch).
"""

from __future__ import annotations

import torch

from ticketlab.sparsity.criteria.base import Criterion, ScoreContext, batch_loss, loss_model


class Snip(Criterion):
    name = "snip"
    needs_data = True

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        model, weights = loss_model(ctx)
        grads = [torch.zeros_like(w) for w in weights]
        for batch in ctx.batches or ():
            for total, grad in zip(grads, torch.autograd.grad(batch_loss(model, batch), weights)):
                total += grad
        return {name: (w.detach() * g).abs() for name, w, g in zip(ctx.names, weights, grads)}
