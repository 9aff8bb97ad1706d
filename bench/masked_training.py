"""Masked training against dense training, with torch.nn.utils.prune's way as the anchor, in one process.

    PYTHONPATH=src python bench/masked_training.py [--optimizers adam,sgd] [--repeats 7] [--sparsity 0.9]

For lenet300_100 and conv4 on mnist5k at batch 60, with Adam (the default settings) and
with SGD (momentum 0.9, Nesterov, weight decay 5e-4), each variant trains the same seeded
init with the real `Trainer` for a fixed number of iterations, and the time is
`Trainer.wall_time`: batching, forward, loss, backward, masking and optimiser step, not the
evaluations before and after (their splits are cut to one batch to keep the run short).

- dense: `Trainer(model, data, cfg)`.
- ticketlab: the same with `constraint=MaskedTraining(model, mask)`, a random mask over the
  prunable weights.
- torch prune: `prune.custom_from_mask` on the same weights, so a forward pre-hook recomputes
  `weight = weight_orig * weight_mask` at every step; then `Trainer(model, data, cfg)`.

Each repeat runs the three variants in turn, after one untimed warm-up round. The report
gives each variant's median steps/s and the median over repeats of its ratio to the dense
run of the same repeat (pairing neighbours in time cancels slow drifts in machine load),
and the ratio of the best runs (on a shared machine, the least disturbed ones).

Adam is built fused, as ticketlab's training builds it: the plain (foreach) Adam step takes
`exp_avg_sq.sqrt()`, which on this CPU is several times slower on the pruned entries'
exactly-zero second moments than on other numbers (masked/dense was 0.70 with it).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from ticketlab.config import DataConfig, ModelConfig, TrainConfig
from ticketlab.data import Dataset, Split, load_data
from ticketlab.models import build_model
from ticketlab.sparsity.mask import Mask, prunable_names
from ticketlab.sparsity.masked import MaskedTraining
from ticketlab.training.loop import Trainer

MODELS = {"lenet300_100": 300, "conv4": 15}  # model -> iterations per timed run (conv4: ~0.3 s each)
OPTIMIZERS = {"adam": {}, "sgd": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)}


def random_mask(model: nn.Module, sparsity: float) -> Mask:
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(1)
    return Mask({name: torch.rand(params[name].shape, generator=generator) >= sparsity
                 for name in prunable_names(model)})


def dense(model: nn.Module, data: Dataset, cfg: TrainConfig, mask: Mask) -> Trainer:
    return Trainer(model, data, cfg, progress=False)


def ticketlab_masked(model: nn.Module, data: Dataset, cfg: TrainConfig, mask: Mask) -> Trainer:
    return Trainer(model, data, cfg, progress=False, constraint=MaskedTraining(model, mask))


def torch_prune(model: nn.Module, data: Dataset, cfg: TrainConfig, mask: Mask) -> Trainer:
    modules = dict(model.named_modules())
    for name, keep in mask.items():
        module, param = name.rsplit(".", 1)
        prune.custom_from_mask(modules[module], param, keep)
    return Trainer(model, data, cfg, progress=False)


VARIANTS: dict[str, Callable[[nn.Module, Dataset, TrainConfig, Mask], Trainer]] = {
    "dense": dense, "ticketlab": ticketlab_masked, "torch prune": torch_prune,
}


def steps_per_second(variant: Callable[..., Trainer], model_name: str, data: Dataset, cfg: TrainConfig,
                     sparsity: float) -> float:
    model = build_model(ModelConfig(name=model_name), data.input_shape, data.num_classes,
                        generator=torch.Generator().manual_seed(0))
    trainer = variant(model, data, cfg, random_mask(model, sparsity))
    trainer.run()
    return trainer.schedule.total / trainer.wall_time


def compare(model_name: str, iterations: int, optimizer: str, data: Dataset, repeats: int, sparsity: float) -> None:
    cfg = TrainConfig(steps=f"{iterations}it", batch_size=60, save_at="", **OPTIMIZERS[optimizer])
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for repeat in range(repeats + 1):
        for name, variant in VARIANTS.items():
            rate = steps_per_second(variant, model_name, data, cfg, sparsity)
            if repeat:  # round 0 warms up
                rates[name].append(rate)
    print(f"{model_name} on mnist5k, batch 60, {optimizer}, {iterations} iterations per run, "
          f"sparsity {sparsity}, {torch.get_num_threads()} thread(s), median of {repeats}")
    for name, values in rates.items():
        ratio = statistics.median(v / d for v, d in zip(values, rates["dense"]))
        print(f"  {name:<12} {statistics.median(values):8.2f} steps/s (range {min(values):.2f}-{max(values):.2f})"
              f"   vs dense: median {ratio:.3f}, best {max(values) / max(rates['dense']):.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", default="adam,sgd", help=f"comma-separated, of {', '.join(OPTIMIZERS)}")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_data(DataConfig(name="mnist5k"))
    one_batch = Split(data.test.x[:60], data.test.y[:60])
    data = dataclasses.replace(data, val=one_batch, test=one_batch)
    for model_name, iterations in MODELS.items():
        for optimizer in args.optimizers.split(","):
            compare(model_name, iterations, optimizer, data, args.repeats, args.sparsity)


if __name__ == "__main__":
    main()
