"""ResNet-20/32/56 for CIFAR (He et al. 2016, section 4.2), laid out as OpenLTH's cifar_resnet.

A 3x3 stem of 16 channels, three stages of n = (depth - 2) / 6 basic blocks with 16, 32
and 64 channels (the first block of stages 2 and 3 halves the image), a global average
pool and a Linear. Parameter names match OpenLTH (conv, bn, blocks.<i>.conv1 ..., fc).
Shortcut A, the paper's CIFAR choice, adds the input subsampled and zero-padded with
channels; shortcut B (OpenLTH's) projects it with a strided 1x1 convolution and BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models.base import ModelError, Shape, ZooModel
from ticketlab.models.structure import ChannelGroup, GroupBuilder

WIDTHS = (16, 32, 64)
SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option A: take every other pixel and add `lo` zero channels before, `hi` after.

    He et al. pad equally (a quarter of the output width each side); separate counts let
    surgery remove padded channels from one side only.
    """

    def __init__(self, lo: int, hi: int) -> None:
        super().__init__()
        self.lo = lo
        self.hi = hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.lo, self.hi))


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int, shortcut: str, bias: bool) -> None:
        super().__init__()
        stride = 1 if n_in == n_out else 2  # a block that widens the stream halves the image
        self.conv1 = nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(n_out)
        self.conv2 = nn.Conv2d(n_out, n_out, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(n_out)
        self.shortcut: nn.Module
        if n_in == n_out:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(n_out // 4, n_out // 4)
        else:
            projection = nn.Conv2d(n_in, n_out, 1, stride=2, bias=bias)
            self.shortcut = nn.Sequential(projection, nn.BatchNorm2d(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(ZooModel):
    """bias=None: convolutions (followed by BatchNorm) without biases, the output layer with one."""

    output_layer = "fc"

    def __init__(
        self, input_shape: Shape, num_classes: int, depth: int, shortcut: str = "A", bias: bool | None = None
    ) -> None:
        super().__init__(input_shape, num_classes)
        if shortcut not in SHORTCUTS:
            raise ModelError(
                f"unknown ResNet shortcut {shortcut!r}; expected A (zero-padded identity) or B (1x1 conv)"
            )
        if depth < 8 or (depth - 2) % 6:
            raise ModelError(f"ResNet depth {depth} is not 6n + 2 for some n >= 1 (20, 32, 56, ...)")
        self.conv = nn.Conv2d(input_shape[0], WIDTHS[0], 3, padding=1, bias=bool(bias))
        self.bn = nn.BatchNorm2d(WIDTHS[0])
        blocks = []
        channels = WIDTHS[0]
        for width in WIDTHS:
            for _ in range((depth - 2) // 6):
                blocks.append(Block(channels, width, shortcut, bias=bool(bias)))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes, bias=bias is not False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    def channel_groups(self) -> list[ChannelGroup]:
        """One group per block's inner channels, and the residual streams.

        Every layer that adds into a stream produces it; with shortcut B each stage starts
        a new stream ("stage<k>.stream"). With shortcut A, stage k's stream continues in
        stage k+1 shifted by the `lo` zero channels put in front of it, so it stays one
        group (with that offset), and the zero-padded channels on either side start groups
        of their own ("stage<k+1>.stream.pad_lo" and "pad_hi").
        """
        builder = GroupBuilder(self)
        stage = 1
        builder.add("stage1.stream", self.bn.weight.shape[0])
        builder.produce("stage1.stream", "conv")
        builder.produce("stage1.stream", "bn")
        # The current stream as segments: (group, the stream channel of the group's unit 0).
        stream = [("stage1.stream", 0)]

        for i, block in enumerate(self.blocks):
            name = f"blocks.{i}"
            readers = [f"{name}.conv1"]
            if isinstance(block.shortcut, nn.Sequential):
                readers.append(f"{name}.shortcut.0")
            for group, start in stream:
                for reader in readers:
                    builder.consume(group, reader, offset=start)

            if not isinstance(block.shortcut, nn.Identity):
                stage += 1
                width = block.bn2.weight.shape[0]
                if isinstance(block.shortcut, ZeroPadShortcut):
                    lo, hi = block.shortcut.lo, block.shortcut.hi
                    builder.add(f"stage{stage}.stream.pad_lo", lo)
                    builder.add(f"stage{stage}.stream.pad_hi", hi)
                    stream = [
                        (f"stage{stage}.stream.pad_lo", 0),
                        *((group, start + lo) for group, start in stream),
                        (f"stage{stage}.stream.pad_hi", width - hi),
                    ]
                else:
                    group = f"stage{stage}.stream"
                    builder.add(group, width)
                    builder.produce(group, f"{name}.shortcut.0")
                    builder.produce(group, f"{name}.shortcut.1")
                    stream = [(group, 0)]

            inner = f"{name}.conv1"
            builder.add(inner, block.bn1.weight.shape[0])
            builder.produce(inner, f"{name}.conv1")
            builder.produce(inner, f"{name}.bn1")
            builder.consume(inner, f"{name}.conv2")
            for group, start in stream:
                builder.produce(group, f"{name}.conv2", offset=start)
                builder.produce(group, f"{name}.bn2", offset=start)

        for group, start in stream:
            builder.consume(group, "fc", offset=start)
        return builder.groups()
