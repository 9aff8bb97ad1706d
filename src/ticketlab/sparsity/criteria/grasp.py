"""GraSP (Wang et al. 2020): keep the weights whose removal would most reduce gradient flow.

With g the loss gradient summed over the batches and H the Hessian of that summed loss,
the original (alecwangcq/GraSP, pruner/GraSP.py) computes S = -θ ⊙ Hg and removes the
weights with the highest S. Here higher means kept, so the score is θ ⊙ Hg = -S: the same
weights go first. As in the original, the logits are divided by a temperature of 200 and
the normalisation of S by |ΣS| (which changes no ranking) is left out; unlike it, Linear
layers are not re-initialised (Xavier) before scoring.
"""

from __future__ import annotations

import torch

from ticketlab.sparsity.criteria.base import Criterion, ScoreContext, batch_loss, loss_model


class GraSP(Criterion):
    name = "grasp"
    needs_data = True
    temperature = 200.0

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        model, weights = loss_model(ctx)
        batches = ctx.batches or ()
        g = [torch.zeros_like(w) for w in weights]
        for batch in batches:
            for total, grad in zip(g, torch.autograd.grad(batch_loss(model, batch, self.temperature), weights)):
                total += grad
        hg = [torch.zeros_like(w) for w in weights]
        for batch in batches:
            grads = torch.autograd.grad(batch_loss(model, batch, self.temperature), weights, create_graph=True)
            flow = sum((stopped * grad).sum() for stopped, grad in zip(g, grads))
            for total, h in zip(hg, torch.autograd.grad(flow, weights, materialize_grads=True)):
                total += h
        return {name: w.detach() * h for name, w, h in zip(ctx.names, weights, hg)}
