"""Measured latency speedup of surgery against the speedup its MACs promise, in one process.

Each model keeps a random half of every channel group's units and is shrunk; both the
dense and the small model are timed on the CPU with 1 thread at batch 64 (3x32x32 random
inputs). A ratio measured/theoretical near 1 means the MACs saved are time saved.

    PYTHONPATH=src python bench/surgery_latency.py [--channels-last] [--models vgg16,resnet20]
                                                   [--round-to 1,8,16] [--sparsity 0.5]

--channels-last times both models in that memory format (the inputs stay contiguous).
--round-to times one small model per N: the units are chosen by `ticketlab prune
--criterion random_units --round-to N` (each group keeps a multiple of N, rounded up), so
the rows compare the same model at the same target with channel counts rounded to N.
"""

from __future__ import annotations

import argparse

import torch

from ticketlab.config import ModelConfig
from ticketlab.models import ZooModel, build_model
from ticketlab.sparsity.criteria import ScoreContext
from ticketlab.sparsity.mask import prunable_names
from ticketlab.sparsity.selection import score_and_select
from ticketlab.structure.stage import measure_latency, units_from_mask
from ticketlab.structure.surgery import count_macs, shrink

SHAPE = (3, 32, 32)
BATCH = 64
MODELS = ("vgg16", "resnet20")


def random_units(model: ZooModel, sparsity: float, round_to: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random `sparsity` of every group's units pruned (layerwise), kept counts rounded up to round_to."""
    ctx = ScoreContext(model, prunable_names(model), generator=torch.Generator().manual_seed(seed))
    return units_from_mask(model, score_and_select(ctx, "random_units", sparsity, scope="layerwise",
                                                   round_to=round_to))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels-last", action="store_true", help="time both models in channels_last format")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    parser.add_argument("--round-to", default="1", help="comma-separated multiples the kept units are rounded to")
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction of each group's units pruned")
    args = parser.parse_args()
    torch.set_num_threads(1)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    print(f"batch {BATCH}, input {'x'.join(map(str, SHAPE))}, 1 thread, a random {args.sparsity:g} of every "
          f"channel group pruned, {memory_format}")
    print(f"{'model':<10} {'round':>5} {'dense ms':>9} {'small ms':>9} {'measured':>9} {'MACs':>9} {'ratio':>6}  "
          "widths kept")
    for name in args.models.split(","):
        dense = build_model(ModelConfig(name=name), SHAPE, 10, generator=torch.Generator().manual_seed(0)).eval()
        dense_ms = measure_latency(dense.to(memory_format=memory_format), SHAPE, BATCH, repeats=7, warmup=2)
        for round_to in (int(n) for n in args.round_to.split(",")):
            units = random_units(dense, args.sparsity, round_to)
            small = shrink(dense, units).eval()
            theoretical = count_macs(dense, SHAPE) / count_macs(small, SHAPE)
            small_ms = measure_latency(small.to(memory_format=memory_format), SHAPE, BATCH, repeats=7, warmup=2)
            measured = dense_ms / small_ms
            widths = sorted({int(keep.sum()) for keep in units.values()})
            print(f"{name:<10} {round_to:>5} {dense_ms:>9.1f} {small_ms:>9.1f} {measured:>8.2f}x "
                  f"{theoretical:>8.2f}x {measured / theoretical:>6.2f}  {widths}")


if __name__ == "__main__":
    main()
