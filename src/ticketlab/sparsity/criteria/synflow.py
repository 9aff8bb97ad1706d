"""SynFlow (Tanaka et al. 2020): iterative synaptic flow, without data.

One round scores |θ ⊙ ∂R/∂θ| on a linearised copy of the masked model: every parameter and
buffer replaced by its absolute value, BatchNorm in eval mode (running statistics), an input
of all ones, R the sum of the outputs. score_and_select runs 100 such rounds, pruning on the
exponential schedule 1 - (1 - s)^(k/100) toward the target s and masking between rounds, as
prune_loop in ganguli-lab/Synaptic-Flow does. R multiplies weights across all layers, so it is
computed in float64 to keep it from overflowing (the original runs in float32; its
`model.double()` is commented out).
"""

from __future__ import annotations

import torch

from ticketlab.config import TicketlabError
from ticketlab.sparsity.criteria.base import Criterion, ScoreContext


class SynFlow(Criterion):
    name = "synflow"
    rounds = 100

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        model = ctx.masked_copy().double().eval()
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.abs_()
        params = dict(model.named_parameters())
        weights = [params[name].requires_grad_() for name in ctx.names]
        ones = torch.ones((1, *input_shape(ctx)), dtype=torch.float64, device=weights[0].device)
        grads = torch.autograd.grad(model(ones).sum(), weights, materialize_grads=True)
        return {name: (w.detach() * g).abs() for name, w, g in zip(ctx.names, weights, grads)}


def input_shape(ctx: ScoreContext) -> tuple[int, ...]:
    """The shape of one input: the zoo model's, else that of the first batch."""
    shape = getattr(ctx.model, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    if ctx.batches:
        return tuple(ctx.batches[0][0].shape[1:])
    raise TicketlabError("criterion synflow needs the input shape: a zoo model (input_shape) or one batch "
                         "in ScoreContext.batches")
