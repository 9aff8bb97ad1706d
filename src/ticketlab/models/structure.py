"""Which parameter slices belong to each output unit, so whole units can be masked or cut out.

A ChannelGroup is a set of units (neurons, filters, channels) that must be pruned together.
Its producers compute the units; zeroing unit i in every producer makes the unit's output
exactly zero. Its consumers read the units; surgery deletes their input slices. Channels
joined by a residual addition are one group, because deleting a channel from one layer of
the sum but not the others would change what the network computes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Slice:
    param: str  # a state_dict key (parameter or buffer)
    dim: int  # the dimension the group's units index
    offset: int = 0  # unit i is index offset + i along dim (a zero-padded shortcut shifts channels)
    block: int = 1  # each unit spans `block` consecutive indices (a Linear after a flatten: H*W)

    def index(self, unit: int) -> slice:
        """The indices along `dim` that belong to `unit`."""
        start = (self.offset + unit) * self.block
        return slice(start, start + self.block)


@dataclass(frozen=True)
class ChannelGroup:
    name: str
    size: int
    producers: tuple[Slice, ...]
    consumers: tuple[Slice, ...]


class GroupBuilder:
    """Collects slices group by group, for architectures where one group spans many layers."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = dict(model.named_modules())
        self.sizes: dict[str, int] = {}
        self.producers: dict[str, list[Slice]] = {}
        self.consumers: dict[str, list[Slice]] = {}

    def add(self, group: str, size: int) -> None:
        self.sizes[group] = size
        self.producers[group] = []
        self.consumers[group] = []

    def produce(self, group: str, module: str, offset: int = 0) -> None:
        """Every output-indexed tensor of `module` (weight, bias, BatchNorm statistics) produces `group`."""
        tensors = itertools.chain(
            self.modules[module].named_parameters(recurse=False),
            self.modules[module].named_buffers(recurse=False),
        )
        # num_batches_tracked is a scalar shared by all channels.
        self.producers[group] += [Slice(f"{module}.{key}", 0, offset) for key, t in tensors if t.dim() > 0]

    def consume(self, group: str, module: str, offset: int = 0, block: int = 1) -> None:
        self.consumers[group].append(Slice(f"{module}.weight", 1, offset, block))

    def groups(self) -> list[ChannelGroup]:
        return [
            ChannelGroup(name, size, tuple(self.producers[name]), tuple(self.consumers[name]))
            for name, size in self.sizes.items()
        ]


def chain_groups(model: nn.Module, layers: Sequence[Sequence[str]]) -> list[ChannelGroup]:
    """Groups of a feed-forward chain without skips, one per layer but the last (the output layer).

    layers[k] names a Linear/Conv and the norms that follow it; it feeds layers[k + 1][0].
    The group is named after its Linear/Conv.
    """
    builder = GroupBuilder(model)
    for (layer, *norms), (consumer, *_) in zip(layers, layers[1:]):
        size = builder.modules[layer].weight.shape[0]
        builder.add(layer, size)
        for module in (layer, *norms):
            builder.produce(layer, module)
        # A Linear after a flatten reads each channel as a block of H*W inputs.
        block = builder.modules[consumer].weight.shape[1] // size
        builder.consume(layer, consumer, block=block)
    return builder.groups()
