"""BasicCNN, the network of the EEE 198 simulated-annealing thesis and its RL predecessor.

Reproduced from `BasicCNN` in prokorpio/everything_190 (basiccnn_cifar/models_to_prune.py):
four unpadded 3x3 convolutions of 64/128/256/512 filters with strides 2, 1, 2, 1, each
followed by ReLU, Dropout(0.3) and BatchNorm (in that order), then one Linear on the
flattened 512 x 4 x 4 map (512 x 3 x 3 on MNIST). The original ended in a Softmax and
trained with CrossEntropyLoss, so softmax was applied twice; this one returns logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models.base import Shape, ZooModel, feature_map_size
from ticketlab.models.structure import ChannelGroup, chain_groups

WIDTHS = (64, 128, 256, 512)
STRIDES = (2, 1, 2, 1)


def _side(side: int) -> int:
    for stride in STRIDES:
        side = (side - 3) // stride + 1 if side >= 3 else 0
    return side


class BasicCNN(ZooModel):
    output_layer = "fc1"

    def __init__(self, input_shape: Shape, num_classes: int, bias: bool = True) -> None:
        super().__init__(input_shape, num_classes)
        height, width = feature_map_size("basiccnn", input_shape, _side)
        self.conv1 = nn.Conv2d(input_shape[0], WIDTHS[0], 3, stride=STRIDES[0], bias=bias)
        self.conv2 = nn.Conv2d(WIDTHS[0], WIDTHS[1], 3, stride=STRIDES[1], bias=bias)
        self.conv3 = nn.Conv2d(WIDTHS[1], WIDTHS[2], 3, stride=STRIDES[2], bias=bias)
        self.conv4 = nn.Conv2d(WIDTHS[2], WIDTHS[3], 3, stride=STRIDES[3], bias=bias)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        self.bn2 = nn.BatchNorm2d(WIDTHS[1])
        self.bn3 = nn.BatchNorm2d(WIDTHS[2])
        self.bn4 = nn.BatchNorm2d(WIDTHS[3])
        self.dropout = nn.Dropout(0.3)
        self.fc1 = nn.Linear(WIDTHS[3] * height * width, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.dropout(F.relu(self.conv1(x))))
        x = self.bn2(self.dropout(F.relu(self.conv2(x))))
        x = self.bn3(self.dropout(F.relu(self.conv3(x))))
        x = self.bn4(self.dropout(F.relu(self.conv4(x))))
        return self.fc1(x.flatten(1))

    def channel_groups(self) -> list[ChannelGroup]:
        layers = [["conv1", "bn1"], ["conv2", "bn2"], ["conv3", "bn3"], ["conv4", "bn4"], ["fc1"]]
        return chain_groups(self, layers)
