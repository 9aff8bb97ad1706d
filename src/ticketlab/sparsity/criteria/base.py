"""The one interface every criterion implements, and the context it scores from."""

from __future__ import annotations

import copy
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.models.structure import Slice
from ticketlab.models.tracing import channel_groups
from ticketlab.sparsity.mask import PRUNABLE_MODULES, Mask

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ScoreContext:
    """What a criterion scores from.

    model: holds the weights of the step the scores are taken from.
    names: the prunable parameters (the scope of unstructured criteria).
    init: weights of the step to compare with (usually init), for criteria that need them.
    batches: validation batches (inputs, labels), for criteria that need data.
    mask: the current mask; criteria score the model with it applied.
    sparsity: the target of the selection these scores are for (score_and_select sets it
        each round), for criteria that adapt to it.
    generator: the random source of random criteria.
    """

    model: nn.Module
    names: list[str]
    init: dict[str, torch.Tensor] | None = None
    batches: list[Batch] | None = None
    mask: Mask | None = None
    sparsity: float | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if not self.names:
            raise TicketlabError("ScoreContext.names is empty; expected the parameters to prune")
        params = dict(self.model.named_parameters())
        unknown = [name for name in self.names if name not in params]
        if unknown:
            raise TicketlabError(f"ScoreContext.names has {', '.join(unknown)}, which the model does not have")
        if self.mask is not None:
            self.mask.check_fits(self.model)

    def params(self) -> dict[str, torch.Tensor]:
        """Every parameter of the model, detached, with the current mask applied."""
        params = {name: p.detach() for name, p in self.model.named_parameters()}
        for name, keep in (self.mask or {}).items():
            params[name] = params[name] * keep.to(params[name].device)
        return params

    def masked_copy(self) -> nn.Module:
        """A copy of the model with the current mask applied, to run without touching the original."""
        model = copy.deepcopy(self.model)
        if self.mask is not None:
            self.mask.apply(model)
        return model


class Criterion(ABC):
    """Turns a ScoreContext into scores: higher = more important = kept first.

    Unstructured criteria score every entry of each parameter in ctx.names; structured ones
    score every unit of each channel group (group name -> (size,) tensor).
    """

    name: str
    structured: bool = False
    needs_data: bool = False
    needs_init: bool = False
    rounds: int = 1  # prune-and-rescore rounds that score_and_select runs by default

    @property
    def description(self) -> str:
        """One line for `ticketlab criteria`: the first line of the class's docstring, else of its module's."""
        doc = (type(self).__doc__ or sys.modules[type(self).__module__].__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.name

    def scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        """Check that ctx has what this criterion needs, then score."""
        self.check(ctx)
        return self.compute(ctx)

    @abstractmethod
    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]: ...

    def check(self, ctx: ScoreContext) -> None:
        """Raise a one-line error if ctx lacks something this criterion needs."""
        if self.needs_data and not ctx.batches:
            raise TicketlabError(f"criterion {self.name} needs data; pass validation batches as ScoreContext.batches")
        if self.needs_init:
            params = dict(ctx.model.named_parameters())
            if ctx.init is None:
                raise TicketlabError(f"criterion {self.name} compares with the weights of another step (usually "
                                     "init); pass them as ScoreContext.init")
            for name in ctx.names:
                if name not in ctx.init:
                    raise TicketlabError(f"the comparison weights (ScoreContext.init) lack {name}; "
                                         "expected weights of the same model")
                if ctx.init[name].shape != params[name].shape:
                    raise TicketlabError(f"the comparison weights of {name} have shape {tuple(ctx.init[name].shape)}, "
                                         f"the model's {tuple(params[name].shape)}; expected weights of the same model")


# --- helpers of the data-driven criteria ------------------------------------------------------

def loss_model(ctx: ScoreContext) -> tuple[nn.Module, list[nn.Parameter]]:
    """A masked copy of the model to take loss gradients on, and its parameters in ctx.names.

    BatchNorm normalises with batch statistics, as in training (SNIP and GraSP score the
    network in training mode); dropout is off so that scores are deterministic.
    """
    model = ctx.masked_copy().train()
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    params = dict(model.named_parameters())
    return model, [params[name].requires_grad_() for name in ctx.names]


def batch_loss(model: nn.Module, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of the model's logits (divided by `temperature`) on one batch."""
    device = next(model.parameters()).device
    inputs, labels = batch
    return F.cross_entropy(model(inputs.to(device)) / temperature, labels.to(device))


# --- helpers of the structured criteria -------------------------------------------------------

def unit_rows(tensor: torch.Tensor, piece: Slice, size: int) -> torch.Tensor:
    """The entries of `tensor` that belong to each of a group's `size` units, one row per unit."""
    part = tensor.narrow(piece.dim, piece.index(0).start, size * piece.block)
    return part.movedim(piece.dim, 0).reshape(size, -1)


def is_layer_weight(param: str, modules: dict[str, nn.Module]) -> bool:
    module, _, key = param.rpartition(".")
    return key == "weight" and isinstance(modules.get(module), PRUNABLE_MODULES)


def incoming_weights(ctx: ScoreContext, weights: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Each group's incoming Linear/Conv weights (masked), one row per unit: (size, fan-in).

    From `weights` (e.g. ctx.init) instead of the model's own when given. A residual group's
    units are produced by several layers; their rows are concatenated.
    """
    modules = dict(ctx.model.named_modules())
    params = ctx.params() if weights is None else weights
    return {
        group.name: torch.cat([unit_rows(params[piece.param], piece, group.size)
                               for piece in group.producers if is_layer_weight(piece.param, modules)], dim=1)
        for group in channel_groups(ctx.model)
    }
