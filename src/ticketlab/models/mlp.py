"""Fully connected ReLU networks: LeNet-300-100 and the network-pruning seed's 1000-1000-500-200."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models.base import Shape, ZooModel
from ticketlab.models.sparse_chain import chain
from ticketlab.models.structure import ChannelGroup, chain_groups


class MLP(ZooModel):
    """Flatten, then Linear+ReLU per hidden width, then a Linear to the classes.

    Layers are named fc1, fc2, ...; the last one is the output layer. With some of them on sparse
    kernels, the whole chain runs as one operation (models/sparse_chain.py).
    """

    fuses_linear_chain = True  # read by sparsity.kernels: on auto, small layers are worth sparse kernels here

    def __init__(self, input_shape: Shape, num_classes: int, widths: Sequence[int], bias: bool = True) -> None:
        super().__init__(input_shape, num_classes)
        sizes = [math.prod(input_shape), *widths, num_classes]
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), start=1):
            self.add_module(f"fc{i}", nn.Linear(n_in, n_out, bias=bias))
        self.output_layer = f"fc{len(sizes) - 1}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, output = layers = list(self.children())
        x = x.flatten(1)
        fused = chain(layers, x)  # some layers on sparse kernels: the whole chain as one operation
        if fused is not None:
            return fused
        for layer in hidden:
            x = F.relu(layer(x))
        return output(x)

    def channel_groups(self) -> list[ChannelGroup]:
        return chain_groups(self, [[name] for name, _ in self.named_children()])
