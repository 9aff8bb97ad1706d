"""Frankle & Carbin's Conv-2, Conv-4 and Conv-6 (The Lottery Ticket Hypothesis, Fig. 2).

3x3 convolutions (padding 1) with ReLU, a 2x2 max-pool after each pair, then fully connected
layers of 256 and 256 units and the output layer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ticketlab.models.base import Shape, ZooModel, feature_map_size
from ticketlab.models.structure import ChannelGroup, chain_groups

PLANS = {
    "conv2": (64, 64),
    "conv4": (64, 64, 128, 128),
    "conv6": (64, 64, 128, 128, 256, 256),
}


class ConvNet(ZooModel):
    def __init__(self, input_shape: Shape, num_classes: int, widths: Sequence[int], bias: bool = True) -> None:
        super().__init__(input_shape, num_classes)
        pools = len(widths) // 2
        height, width = feature_map_size(f"conv{len(widths)}", input_shape, lambda side: side // 2**pools)

        channels = input_shape[0]
        features: OrderedDict[str, nn.Module] = OrderedDict()
        for i, out in enumerate(widths, start=1):
            features[f"conv{i}"] = nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=bias)
            features[f"relu{i}"] = nn.ReLU()
            if i % 2 == 0:
                features[f"pool{i // 2}"] = nn.MaxPool2d(2)
            channels = out
        self.features = nn.Sequential(features)
        self.classifier = nn.Sequential(OrderedDict(
            fc1=nn.Linear(channels * height * width, 256, bias=bias),
            relu1=nn.ReLU(),
            fc2=nn.Linear(256, 256, bias=bias),
            relu2=nn.ReLU(),
            fc3=nn.Linear(256, num_classes, bias=bias),
        ))
        self.output_layer = "classifier.fc3"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))

    def channel_groups(self) -> list[ChannelGroup]:
        layers = [
            [name]
            for name, module in self.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))
        ]
        return chain_groups(self, layers)
