"""Evaluations per second of the fast mask evaluator against the thesis's evaluator, in one process.

    PYTHONPATH=src python bench/search_evaluator.py [--cases lenet,cnn-mnist,cnn-cifar] [--rounds 3] [--max-h 50]

Cases (each scores 1,024 images, on one thread):
- lenet: LeNet-300-100 without biases, one unit per weight (266,200), sparsity 0.9, on
  1,024 MNIST training images held out of training (mnist5k with val_size=1024: the thesis
  also scored its MLP masks on training images).
- cnn-mnist: BasicCNN, one unit per filter (960), sparsity 0.7, on the same images.
- cnn-cifar: BasicCNN on 3x32x32 images: the 300 generated images of smoke-cifar10, tiled to
  1,024 (the speed of a forward pass does not depend on the pixels).

Both evaluators score the same candidates of a simulated-annealing-like walk: each
candidate swaps h random kept units with h random pruned ones of the current mask (h drawn
from 1..max-h: 50 is the middle of an annealing run, 5 its end), and is accepted (becomes
the current mask) with probability 1/2. The weights
are the seeded initialisation, saved to a temporary checkpoint.

- reference: search.reference.reference_score per candidate: torch.load of the checkpoint,
  a model built on the meta device and loaded, the mask (space.to_mask) multiplied in,
  eval-mode forward in batches of 256.
- fast: search.evaluators.make_evaluator, built once; then evaluator.score per candidate
  (for LeNet a search.evaluators.delta.DeltaEvaluator: activations updated by what each move
  flips, near-tied images recounted exactly; for BasicCNN the incremental evaluator).
- hinted: another such evaluator, given each candidate's search.moves.Move as searchers give
  it (the units the move flipped, from the mask it was drawn from).

Each round times a block of reference evaluations, then a block of fast ones and of hinted
ones (the same candidates first) continuing the walk; the report gives evaluations/s of
each (median over rounds), the median per-round ratios to the reference, and whether both
fast evaluators returned the reference's scores on every candidate it scored.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ticketlab.config import DataConfig, ModelConfig
from ticketlab.data import load_data
from ticketlab.models import MODELS, build_model
from ticketlab.search.evaluators import make_evaluator
from ticketlab.search.moves import Move
from ticketlab.search.reference import reference_score
from ticketlab.search.space import SearchSpace, unit_space, weight_space


@dataclass(frozen=True)
class Case:
    model: str
    bias: bool | None
    data: str
    granularity: str
    sparsity: float
    reference_evals: int  # per round
    fast_evals: int  # per round


CASES = {
    "lenet": Case("lenet300_100", False, "mnist5k", "weight", 0.9, 40, 200),
    "cnn-mnist": Case("basiccnn", None, "mnist5k", "filter", 0.7, 3, 12),
    "cnn-cifar": Case("basiccnn", None, "smoke-cifar10", "filter", 0.7, 3, 12),
}
IMAGES = 1024


def scoring_images(name: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    if name == "mnist5k":
        data = load_data(DataConfig(name="mnist5k", val_size=IMAGES))
        return data.val.x, data.val.y, data.input_shape
    data = load_data(DataConfig(name=name))
    x, y = torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y])
    repeats = -(-IMAGES // len(y))
    return x.repeat(repeats, 1, 1, 1)[:IMAGES], y.repeat(repeats)[:IMAGES], data.input_shape


def walk(space: SearchSpace, keep: torch.Tensor, max_h: int, generator: torch.Generator):
    """Candidates of an annealing-like walk, each with its Move from the mask it was drawn from:
    swap h kept and h pruned units; accept half of them."""
    while True:
        h = int(torch.randint(1, max_h + 1, (), generator=generator))
        kept, pruned = keep.nonzero().flatten(), (~keep).nonzero().flatten()
        out = kept[torch.randperm(len(kept), generator=generator)[:h]]
        into = pruned[torch.randperm(len(pruned), generator=generator)[:h]]
        candidate = keep.clone()
        candidate[out] = False
        candidate[into] = True
        yield candidate, Move(keep, torch.cat([out, into]))
        if bool(torch.rand((), generator=generator) < 0.5):
            keep = candidate


def timed(score: Callable[[torch.Tensor, Move], float], candidates: list[tuple[torch.Tensor, Move]],
          ) -> tuple[float, list[float]]:
    started = time.perf_counter()
    scores = [score(keep, move) for keep, move in candidates]
    return len(candidates) / (time.perf_counter() - started), scores


def run_case(name: str, case: Case, rounds: int, max_h: int, directory: Path) -> None:
    x, y, shape = scoring_images(case.data)
    config = ModelConfig(name=case.model, bias=case.bias)
    model = build_model(config, shape, 10, generator=torch.Generator().manual_seed(0))
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    checkpoint = directory / f"{name}.pt"
    torch.save({"model": weights}, checkpoint)

    def builder() -> nn.Module:
        with torch.device("meta"):
            return MODELS[config.name](config, shape, 10)

    space = weight_space(model) if case.granularity == "weight" else unit_space(model)
    generator = torch.Generator().manual_seed(1)
    start = space.random(case.sparsity, generator)
    # Two fast evaluators walk the same candidates, one told each candidate's Move, one not.
    plain = make_evaluator(model, weights, space, x, y)
    hinted = make_evaluator(build_model(config, shape, 10), weights, space, x, y)
    for evaluator in (plain, hinted):  # the first score is a whole forward pass, as every one is for the reference
        evaluator.score(start)
    candidates = walk(space, start, max_h, generator)
    rates: dict[str, list[float]] = {"reference": [], "plain": [], "hinted": []}
    identical = True
    for _ in range(rounds):
        block = [next(candidates) for _ in range(case.fast_evals)]
        reference_rate, expected = timed(
            lambda keep, _: reference_score(checkpoint, builder, space.to_mask(keep), x, y),
            block[:case.reference_evals])
        plain_rate, plain_scores = timed(lambda keep, _: plain.score(keep), block)
        hinted_rate, hinted_scores = timed(hinted.score, block)
        identical &= plain_scores[:case.reference_evals] == expected == hinted_scores[:case.reference_evals]
        for key, rate in (("reference", reference_rate), ("plain", plain_rate), ("hinted", hinted_rate)):
            rates[key].append(rate)
    reference = statistics.median(rates["reference"])
    ratios = {key: statistics.median(r / q for r, q in zip(rates[key], rates["reference"]))
              for key in ("plain", "hinted")}
    print(f"{name:<10} {type(plain).__name__:<21} {space.size:>9} {case.sparsity:>5.2f} {reference:>10.2f} "
          + "".join(f"{statistics.median(rates[key]):>10.2f} {ratios[key]:>6.1f}x" for key in ("plain", "hinted"))
          + f"  {'yes' if identical else 'NO'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-h", type=int, default=50, help="largest number of units a move swaps each way")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"moves swap 1 to {args.max_h} units each way; {IMAGES} images; 1 thread")
    print(f"{'case':<10} {'evaluator':<21} {'units':>9} {'spars':>5} {'ref ev/s':>10} {'fast ev/s':>10} "
          f"{'ratio':>7} {'hinted':>10} {'ratio':>7}  same")
    with tempfile.TemporaryDirectory() as directory:
        for name in args.cases.split(","):
            run_case(name, CASES[name], args.rounds, args.max_h, Path(directory))


if __name__ == "__main__":
    main()
