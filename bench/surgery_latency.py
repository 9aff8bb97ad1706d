"""Measured latency speedup of surgery against the speedup its MACs promise, in one process.

Each model keeps a random half of every channel group's units and is shrunk; both the
dense and the small model are timed on the CPU with 1 thread at batch 64 (3x32x32 random
inputs). A ratio measured/theoretical near 1 means the MACs saved are time saved.

    PYTHONPATH=src python bench/surgery_latency.py [--channels-last] [--models vgg16,resnet20]

--channels-last times both models in that memory format (the inputs stay contiguous).
"""

from __future__ import annotations

import argparse

import torch

from ticketlab.config import ModelConfig
from ticketlab.models import ZooModel, build_model
from ticketlab.structure.stage import measure_latency
from ticketlab.structure.surgery import count_macs, shrink

SHAPE = (3, 32, 32)
BATCH = 64
MODELS = ("vgg16", "resnet20")


def half_units(model: ZooModel, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random half (at least one) of every group's units."""
    generator = torch.Generator().manual_seed(seed)
    units = {}
    for group in model.channel_groups():
        keep = torch.zeros(group.size, dtype=torch.bool)
        keep[torch.randperm(group.size, generator=generator)[:max(1, group.size // 2)]] = True
        units[group.name] = keep
    return units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels-last", action="store_true", help="time both models in channels_last format")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    args = parser.parse_args()
    torch.set_num_threads(1)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    print(f"batch {BATCH}, input {'x'.join(map(str, SHAPE))}, 1 thread, half of every channel group kept, "
          f"{memory_format}")
    print(f"{'model':<10} {'dense ms':>9} {'small ms':>9} {'measured':>9} {'MACs':>9} {'ratio':>6}")
    for name in args.models.split(","):
        dense = build_model(ModelConfig(name=name), SHAPE, 10, generator=torch.Generator().manual_seed(0)).eval()
        small = shrink(dense, half_units(dense)).eval()
        theoretical = count_macs(dense, SHAPE) / count_macs(small, SHAPE)
        dense, small = dense.to(memory_format=memory_format), small.to(memory_format=memory_format)
        dense_ms, small_ms = (measure_latency(m, SHAPE, BATCH, repeats=7, warmup=2) for m in (dense, small))
        measured = dense_ms / small_ms
        print(f"{name:<10} {dense_ms:>9.1f} {small_ms:>9.1f} {measured:>8.2f}x {theoretical:>8.2f}x "
              f"{measured / theoretical:>6.2f}")


if __name__ == "__main__":
    main()
