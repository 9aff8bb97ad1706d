"""Helpers for tests that check exact structural properties of models."""

import torch
from torch import nn


def trained_looking(model: nn.Module, seed: int = 0) -> None:
    """Nonzero biases, BatchNorm affine parameters and running statistics, as after training,
    so that a slice a structure declaration misses leaves its unit visibly nonzero."""
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
                module.bias.normal_(0, 0.1, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.5, generator=generator)
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2, generator=generator)
                module.num_batches_tracked.fill_(7)
