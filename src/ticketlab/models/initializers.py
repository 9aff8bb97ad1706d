"""Weight initialisations that draw only from a given generator, so a seed fixes the weights."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

Layer = nn.Linear | nn.Conv2d

DEFAULT_INIT = "kaiming_normal"  # OpenLTH's default


def _kaiming_normal(layer: Layer, generator: torch.Generator | None) -> None:
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=generator)


def _kaiming_uniform(layer: Layer, generator: torch.Generator | None) -> None:
    nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu", generator=generator)


def _xavier_normal(layer: Layer, generator: torch.Generator | None) -> None:
    nn.init.xavier_normal_(layer.weight, generator=generator)


def _torch_default(layer: Layer, generator: torch.Generator | None) -> None:
    # What nn.Linear/nn.Conv2d.reset_parameters does, biases included: the init of code that
    # never chose one (the SA thesis), reproduced from the generator.
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    if layer.bias is not None:
        bound = 1 / math.sqrt(layer.weight[0].numel())
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


INITS: dict[str, Callable[[Layer, torch.Generator | None], None]] = {
    "kaiming_normal": _kaiming_normal,
    "kaiming_uniform": _kaiming_uniform,
    "xavier_normal": _xavier_normal,
    "torch": _torch_default,
}


def initialize(model: nn.Module, init: str, generator: torch.Generator | None = None) -> None:
    """Set every parameter and buffer of `model`, in module order.

    Linear/Conv weights follow `init`, biases are zero (except with "torch"), BatchNorm
    scales are 1, shifts 0 and running statistics fresh. Nothing is read from the tensors'
    old values, so this also fills a model built on the meta device and moved with to_empty.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            INITS[init](module, generator)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
        elif next(module.parameters(recurse=False), None) is not None:
            raise TypeError(f"initialize does not know how to set a {type(module).__name__}")
