"""What every zoo model has: an output layer, prunable weights, and its channel groups."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.models.sparse_linear import SparseLinear
from ticketlab.models.structure import ChannelGroup
from ticketlab.models.tracing import traced

Shape = tuple[int, int, int]


class ModelError(TicketlabError):
    """A model was asked for that does not exist or does not fit its input."""


class ZooModel(nn.Module):
    """An nn.Module that names its output layer and declares its channel groups.

    input_shape and num_classes are what the model was built for.
    """

    output_layer: str

    def __init__(self, input_shape: Shape, num_classes: int) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.num_classes = num_classes

    def prunable_parameters(self) -> list[str]:
        """Names of every Linear/Conv weight, output layer included, in module order (a Linear on
        sparse kernels, models.sparse_linear, too: its weight is trained as its kept values)."""
        return [
            f"{name}.weight"
            for name, module in self.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d, SparseLinear))
        ]

    def channel_groups(self) -> list[ChannelGroup]:
        """The units (neurons, filters, channels) that structured pruning may remove: traced from
        the model's graph (models/tracing.py), once per layout. The first zoo models declare theirs
        by hand instead, under the names their saved masks use; a test holds the two equal."""
        found = traced(self)
        assert found is not None  # a zoo model knows its input shape
        return found.groups


def feature_map_size(model: str, input_shape: Shape, side: Callable[[int], int]) -> tuple[int, int]:
    """The final feature map's (height, width), given how one image side shrinks through the model.

    Raises ModelError naming the smallest input side that keeps at least one pixel.
    """
    _, height, width = input_shape
    out = side(height), side(width)
    if min(out) < 1:
        smallest = next(s for s in itertools.count(1) if side(s) >= 1)
        raise ModelError(
            f"{model} does not fit a {'x'.join(map(str, input_shape))} input (its feature map "
            f"shrinks to nothing); it takes images of at least {smallest}x{smallest} pixels"
        )
    return out
