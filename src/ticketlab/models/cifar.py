"""ResNet-18 and MobileNetV2 for 32x32 images, as CIFAR code usually builds them (the stems of
He et al. 2016 and Sandler et al. 2018 without their ImageNet downsampling, e.g. kuangliu's
pytorch-cifar). Neither declares its channel groups: they are traced (models/tracing.py).

- ResNet-18: a 3x3 stem of 64 channels, four stages of two basic blocks (64, 128, 256, 512; the
  first block of each later stage halves the image and projects its shortcut with a 1x1
  convolution and BatchNorm), a global average pool and a Linear.
- MobileNetV2: a 3x3 stem of 32 channels, inverted residual blocks (a 1x1 expansion, a 3x3
  depthwise convolution, a 1x1 linear projection, each with BatchNorm; added to the input when
  the shape allows), a 1x1 convolution to 1280 channels, a global average pool and a Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models.base import Shape, ZooModel

RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (width, stride of the stage's first block)
# (expansion, width, blocks, stride of the first), CIFAR strides: the stem and first stage keep 32x32.
MOBILENET_V2_PLAN = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                     (6, 320, 1, 1))


def conv_bn(n_in: int, n_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(n_in, n_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                                   bias=False), nn.BatchNorm2d(n_out))


class BasicBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(n_in, n_out, 3, stride)
        self.conv2 = conv_bn(n_out, n_out, 3)
        self.shortcut = conv_bn(n_in, n_out, 1, stride) if stride != 1 or n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class ResNet18(ZooModel):
    output_layer = "fc"

    def __init__(self, input_shape: Shape, num_classes: int) -> None:
        super().__init__(input_shape, num_classes)
        self.stem = conv_bn(input_shape[0], 64, 3)
        blocks, width = [], 64
        for n_out, stride in RESNET18_STAGES:
            blocks += [BasicBlock(width, n_out, stride), BasicBlock(n_out, n_out, 1)]
            width = n_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


class InvertedResidual(nn.Module):
    def __init__(self, n_in: int, n_out: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = n_in * expansion
        self.expand = conv_bn(n_in, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = conv_bn(hidden, n_out, 1)
        self.residual = stride == 1 and n_in == n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(F.relu6(self.depthwise(F.relu6(self.expand(x)))))
        return x + out if self.residual else out


class MobileNetV2(ZooModel):
    output_layer = "fc"

    def __init__(self, input_shape: Shape, num_classes: int) -> None:
        super().__init__(input_shape, num_classes)
        self.stem = conv_bn(input_shape[0], 32, 3)
        blocks, width = [], 32
        for expansion, n_out, count, stride in MOBILENET_V2_PLAN:
            for i in range(count):
                blocks.append(InvertedResidual(width, n_out, expansion, stride if i == 0 else 1))
                width = n_out
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(width, 1280, 1)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.head(self.blocks(F.relu6(self.stem(x)))))
        return self.fc(x.mean(dim=(2, 3)))
