"""BatchNorm scale |γ| per channel (network slimming, Liu et al. 2017; early-bird tickets).

A residual group is normalised by several BatchNorms, one per layer adding into it; its
units score the mean |γ| over them. A group that passes through no BatchNorm (a Linear hidden
layer, a conv without one) has no scale to rank by: it is left whole, as Torch-Pruning's
BNScaleImportance leaves it, and the prune run's per-group counts show it kept in full.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.models.tracing import channel_groups
from ticketlab.sparsity.criteria.base import Criterion, ScoreContext, unit_rows


def group_scales(ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
    """Per channel group, the mean |γ| of each unit over the BatchNorms it passes through;
    None for a group that passes through none."""
    scales = {f"{name}.weight" for name, m in ctx.model.named_modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None}
    params = ctx.params()
    found: dict[str, torch.Tensor | None] = {}
    for group in channel_groups(ctx.model):
        gammas = [unit_rows(params[p.param], p, group.size) for p in group.producers if p.param in scales]
        found[group.name] = torch.cat(gammas, dim=1).abs().mean(dim=1) if gammas else None
    return found


class BNScale(Criterion):
    name = "bn_scale"
    structured = True

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        found = group_scales(ctx)
        scores = {name: score for name, score in found.items() if score is not None}
        if not scores:
            raise TicketlabError(f"criterion bn_scale needs BatchNorm layers with a scale; "
                                 f"{type(ctx.model).__name__} has none")
        return scores
