"""Scores per second of a search's trained evaluator (train_steps > 0) on dense masked and on sparse
kernels, in one process.

    PYTHONPATH=src python bench/trained_evaluator.py [--steps 50] [--candidates 6] [--rounds 3]

LeNet-300-100 (biases, seeded initialisation), one unit per weight, on mnist5k: each candidate
(a random mask at the sparsity) trains `steps` iterations of Adam (lr 1.2e-3, batch 60) on the
training images, then is scored (loss) on 1,024 held-out training images. Each round scores the
same candidates with kernels=dense, then with kernels=auto; the report gives the median seconds
per score of each, their ratio, and the largest difference between the two paths' scores (float
rounding: the same updates summed in another order).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from ticketlab.config import DataConfig, ModelConfig, TrainConfig
from ticketlab.data import load_data
from ticketlab.models import build_model
from ticketlab.search.evaluators import make_evaluator
from ticketlab.search.space import weight_space

SPARSITIES = (0.9, 0.964, 0.988)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_data(DataConfig(name="mnist5k", val_size=1024))
    model = build_model(ModelConfig(name="lenet300_100"), data.input_shape, data.num_classes,
                        generator=torch.Generator().manual_seed(0))
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    space = weight_space(model)
    config = TrainConfig(optimizer="adam", lr=1.2e-3, batch_size=60)
    print(f"LeNet-300-100, {args.steps} Adam steps per candidate, scored on {len(data.val.y)} images, 1 thread")
    print(f"{'kept':>6} {'dense s/score':>14} {'auto s/score':>13} {'ratio':>6} {'max |diff|':>11}")
    for sparsity in SPARSITIES:
        generator = torch.Generator().manual_seed(1)
        candidates = [space.random(sparsity, generator) for _ in range(args.candidates)]
        evaluators = {kernels: make_evaluator(copy.deepcopy(model), weights, space, data.val.x, data.val.y,
                                              metric="loss", train_steps=args.steps, train_config=config,
                                              train_data=data.train, kernels=kernels)
                      for kernels in ("dense", "auto")}
        seconds: dict[str, list[float]] = {kernels: [] for kernels in evaluators}
        scores: dict[str, list[float]] = {kernels: [] for kernels in evaluators}
        for _ in range(args.rounds):
            for kernels, evaluator in evaluators.items():
                started = time.perf_counter()
                scores[kernels] = [evaluator.score(keep) for keep in candidates]
                seconds[kernels].append((time.perf_counter() - started) / len(candidates))
        dense, auto = statistics.median(seconds["dense"]), statistics.median(seconds["auto"])
        difference = max(abs(a - b) for a, b in zip(scores["dense"], scores["auto"]))
        print(f"{1 - sparsity:>6.1%} {dense:>14.4f} {auto:>13.4f} {dense / auto:>5.2f}x {difference:>11.2e}")


if __name__ == "__main__":
    main()
