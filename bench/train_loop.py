"""ticketlab's training loop against a minimal hand-written PyTorch loop, in one process.

Same model, data, batch size, optimiser and threads. The minimal loop only shuffles,
steps and counts; ticketlab also evaluates validation and test sets every epoch and
tracks metrics, so "end to end" includes that work and "training only" excludes it.
Runs alternate (minimal, ticketlab, minimal, ...) and the median of each is reported.

    python bench/train_loop.py [--dataset mnist] [--model lenet300_100] [--epochs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ticketlab.config import DataConfig, ModelConfig, TrainConfig
from ticketlab.data import load_data
from ticketlab.training.loop import Trainer
from ticketlab.training.stage import init_model


def minimal_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, lr: float) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # as ticketlab builds it
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(y), batch):
            index = order[start:start + batch]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="lenet300_100")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_data(DataConfig(name=args.dataset))
    model_cfg = ModelConfig(name=args.model)
    cfg = TrainConfig(steps=f"{args.epochs}ep", batch_size=args.batch_size, optimizer="adam", lr=1.2e-3)
    samples = args.epochs * len(data.train.y)
    minimal, ours, ours_training = [], [], []
    for _ in range(args.repeats):
        minimal.append(minimal_loop(init_model(model_cfg, data, 0), data.train.x, data.train.y,
                                    args.epochs, args.batch_size, cfg.lr))
        trainer = Trainer(init_model(model_cfg, data, 0), data, cfg, progress=False)
        started = time.perf_counter()
        trainer.run()
        ours.append(time.perf_counter() - started)
        ours_training.append(trainer.wall_time)

    rate = {name: samples / statistics.median(times)
            for name, times in (("minimal", minimal), ("ticketlab", ours), ("ticketlab_training", ours_training))}
    print(f"{args.model} on {args.dataset} ({len(data.train.y)} train images), batch {args.batch_size}, "
          f"{args.epochs} epochs, {args.threads} thread(s), median of {args.repeats}")
    print(f"  minimal loop:                 {rate['minimal']:9.0f} samples/s")
    print(f"  ticketlab, training only:     {rate['ticketlab_training']:9.0f} samples/s   "
          f"ratio {rate['ticketlab_training'] / rate['minimal']:.3f}")
    print(f"  ticketlab, end to end (+eval): {rate['ticketlab']:9.0f} samples/s   "
          f"ratio {rate['ticketlab'] / rate['minimal']:.3f}")


if __name__ == "__main__":
    main()
