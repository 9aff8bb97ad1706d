"""VGG-11/13/16/19 with BatchNorm for small images, laid out as OpenLTH's cifar_vgg.

Parameter names match OpenLTH (layers.<i>.conv, layers.<i>.bn, fc). Two changes let the same
network take 28x28 and 8x8 images and leave 32x32 unchanged: the max-pools round up
(ceil_mode), and the final 2x2 average pool is a global average pool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models.base import Shape, ZooModel
from ticketlab.models.structure import ChannelGroup, chain_groups

PLANS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class ConvBN(nn.Module):
    def __init__(self, n_in: int, n_out: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, kernel_size=3, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class VGG(ZooModel):
    """bias=None: convolutions (followed by BatchNorm) without biases, the output layer with one."""

    output_layer = "fc"

    def __init__(
        self, input_shape: Shape, num_classes: int, plan: list[int | str], bias: bool | None = None
    ) -> None:
        super().__init__(input_shape, num_classes)
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers.append(ConvBN(channels, int(spec), bias=bool(bias)))
                channels = int(spec)
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes, bias=bias is not False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(x).mean(dim=(2, 3)))

    def channel_groups(self) -> list[ChannelGroup]:
        convs = [
            [f"layers.{i}.conv", f"layers.{i}.bn"]
            for i, layer in enumerate(self.layers)
            if isinstance(layer, ConvBN)
        ]
        return chain_groups(self, [*convs, ["fc"]])
