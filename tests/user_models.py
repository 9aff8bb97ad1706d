"""Models a user might bring, built the way one would write them: not zoo models, no declared groups."""

import torch
import torch.nn.functional as F
from torch import nn


class ResidualDepthwise(nn.Module):
    """A user's CNN: a stem, a depthwise-separable block added back to its input, BatchNorm, a Linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.pointwise = nn.Conv2d(16, 16, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.expand = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.head = nn.Linear(24 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = F.relu(self.bn1(self.depthwise(x)))
        x = F.relu(x + self.bn2(self.pointwise(y)))
        x = F.adaptive_avg_pool2d(F.relu(self.expand(x)), 4)
        return self.head(torch.flatten(x, 1))


class SharedLayer(nn.Module):
    """A model that uses one layer twice."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(12, 20)
        self.shared = nn.Linear(20, 20)
        self.out = nn.Linear(20, 3)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = torch.relu(self.shared(h))
        h = torch.relu(self.shared(h))
        return self.out(h)


class Branches(nn.Module):
    """Two convolutions concatenated, then a 1x1 convolution and global pooling."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 5, padding=2)
        self.mix = nn.Conv2d(14, 12, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1)
        x = F.relu(self.mix(x))
        return self.fc(x.mean(dim=(2, 3)))


class Gated(nn.Module):
    """Squeeze-and-excitation: channels scaled by a sigmoid of themselves (a sigmoid maps 0 to 0.5)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.squeeze = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.conv(x))
        gate = torch.sigmoid(self.squeeze(x.mean(dim=(2, 3))))
        x = x * gate[:, :, None, None]
        return self.fc(x.mean(dim=(2, 3)))


class Grouped(nn.Module):
    """A grouped (not depthwise) convolution between two plain ones."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.b = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = F.relu(self.b(F.relu(self.grouped(F.relu(self.a(x))))))
        return self.fc(x.mean(dim=(2, 3)))


class Branching(nn.Module):
    """Control flow on the data: tracing cannot follow it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            x = torch.relu(self.a(x))
        return self.b(x)


class MaxOverSpace(nn.Module):
    """A maximum over rows then columns, each giving (values, indices) pairs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.hidden = nn.Linear(8, 6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = F.relu(self.conv(x)).max(dim=3)[0].max(dim=2).values
        return self.fc(torch.relu(self.hidden(x)))


class ChannelPad(nn.Module):
    """A user's own option-A shortcut: zero channels before and after, widths held as lo and hi."""

    def __init__(self, lo, hi):
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x):
        return F.pad(x, (0, 0, 0, 0, self.lo, self.hi))


class PaddedShortcut(nn.Module):
    """A block that widens its stream from 8 to 16 channels, its shortcut padded with zeros."""

    def __init__(self, shortcut=None):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv, self.bn1 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.shortcut = shortcut or ChannelPad(3, 5)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(self.bn1(self.conv(x)) + self.shortcut(x))
        return self.fc(x.mean(dim=(2, 3)))


class WidthPad(nn.Module):
    """A padded shortcut whose forward computes its widths: surgery cannot change them."""

    def __init__(self):
        super().__init__()
        self.extra = 8

    def forward(self, x):
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
