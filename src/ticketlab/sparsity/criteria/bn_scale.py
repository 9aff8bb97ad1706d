"""BatchNorm scale |γ| per channel (network slimming, Liu et al. 2017; early-bird tickets).

A residual group is normalised by several BatchNorms, one per layer adding into it; its
units score the mean |γ| over them.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.sparsity.criteria.base import Criterion, ScoreContext, channel_groups, unit_rows


class BNScale(Criterion):
    name = "bn_scale"
    structured = True

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        modules = dict(ctx.model.named_modules())
        scales = {f"{name}.weight" for name, m in modules.items()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None}
        if not scales:
            raise TicketlabError(f"criterion bn_scale needs BatchNorm layers with a scale; "
                                 f"{type(ctx.model).__name__} has none")
        params = ctx.params()
        scores = {}
        for group in channel_groups(ctx.model):
            gammas = [unit_rows(params[p.param], p, group.size) for p in group.producers if p.param in scales]
            if not gammas:
                raise TicketlabError(f"channel group {group.name} passes through no BatchNorm; bn_scale needs "
                                     "every group to")
            scores[group.name] = torch.cat(gammas, dim=1).abs().mean(dim=1)
        return scores
