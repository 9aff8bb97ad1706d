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
The dense model and every small one are timed in turn, round after round (ROUNDS), and each
row reports the medians, so that a machine whose speed drifts affects them alike.
--conv-widths also times one 3x3 convolution (c -> c channels, batch 64) at each width
ResNet-20 has, dense and halved, in GMAC/s: why a thin network gains less than its MACs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from ticketlab.config import ModelConfig
from ticketlab.models import ZooModel, build_model
from ticketlab.sparsity.criteria import ScoreContext
from ticketlab.sparsity.mask import prunable_names
from ticketlab.sparsity.selection import score_and_select
from ticketlab.structure.stage import units_from_mask
from ticketlab.structure.surgery import count_macs, shrink

SHAPE = (3, 32, 32)
BATCH = 64
MODELS = ("vgg16", "resnet20")
ROUNDS = 9
RESNET20_CONVS = ((16, 32), (32, 16), (64, 8))  # (channels, feature map side) of each stage's 3x3 convs


def random_units(model: ZooModel, sparsity: float, round_to: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random `sparsity` of every group's units pruned (layerwise), kept counts rounded up to round_to."""
    ctx = ScoreContext(model, prunable_names(model), generator=torch.Generator().manual_seed(seed))
    return units_from_mask(model, score_and_select(ctx, "random_units", sparsity, scope="layerwise",
                                                   round_to=round_to))


def interleaved_ms(models: list[nn.Module], inputs: list[torch.Tensor], rounds: int = ROUNDS) -> list[float]:
    """Median ms of one forward pass of each model on its input, timed in turn round after round
    (after one warm-up round)."""
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for round_ in range(rounds + 1):
            for model, x, spent in zip(models, inputs, times):
                started = time.perf_counter()
                model(x)
                if round_:
                    spent.append(1000 * (time.perf_counter() - started))
    return [statistics.median(spent) for spent in times]


def conv_widths() -> None:
    print(f"\none 3x3 convolution, c -> c channels, batch {BATCH}, 1 thread")
    print(f"{'channels':>8} {'side':>5} {'dense GMAC/s':>13} {'half GMAC/s':>12} {'half / dense':>13}")
    for channels, side in RESNET20_CONVS:
        widths = (channels, channels // 2)
        convs = [nn.Conv2d(c, c, 3, padding=1, bias=False).eval() for c in widths]
        spent = interleaved_ms(convs, [torch.randn(BATCH, c, side, side) for c in widths], rounds=15)
        dense_rate, half_rate = (BATCH * side * side * 9 * c * c / ms / 1e6 for c, ms in zip(widths, spent))
        print(f"{channels:>8} {side:>5} {dense_rate:>13.1f} {half_rate:>12.1f} {half_rate / dense_rate:>13.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels-last", action="store_true", help="time both models in channels_last format")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    parser.add_argument("--round-to", default="1", help="comma-separated multiples the kept units are rounded to")
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction of each group's units pruned")
    parser.add_argument("--conv-widths", action="store_true", help="also time single convolutions by width")
    args = parser.parse_args()
    torch.set_num_threads(1)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    print(f"batch {BATCH}, input {'x'.join(map(str, SHAPE))}, 1 thread, a random {args.sparsity:g} of every "
          f"channel group pruned, {memory_format}, medians of {ROUNDS} interleaved rounds")
    print(f"{'model':<10} {'round':>5} {'dense ms':>9} {'small ms':>9} {'measured':>9} {'MACs':>9} {'ratio':>6}  "
          "widths kept")
    x = torch.randn(BATCH, *SHAPE, generator=torch.Generator().manual_seed(0))
    for name in args.models.split(","):
        dense = build_model(ModelConfig(name=name), SHAPE, 10, generator=torch.Generator().manual_seed(0)).eval()
        multiples = [int(n) for n in args.round_to.split(",")]
        unit_sets = [random_units(dense, args.sparsity, n) for n in multiples]
        smalls = [shrink(dense, units).eval() for units in unit_sets]
        models = [m.to(memory_format=memory_format) for m in (dense, *smalls)]
        dense_ms, *small_ms = interleaved_ms(models, [x] * len(models))
        for round_to, units, small, ms in zip(multiples, unit_sets, smalls, small_ms):
            theoretical = count_macs(dense, SHAPE) / count_macs(small, SHAPE)
            measured = dense_ms / ms
            widths = sorted({int(keep.sum()) for keep in units.values()})
            print(f"{name:<10} {round_to:>5} {dense_ms:>9.1f} {ms:>9.1f} {measured:>8.2f}x "
                  f"{theoretical:>8.2f}x {measured / theoretical:>6.2f}  {widths}")
    if args.conv_widths:
        conv_widths()


if __name__ == "__main__":
    main()
