"""Time per training step with 1 thread against 2 threads, in one process.

This measures the basis for `--threads`' default. On a 2-core machine a second PyTorch
thread competes with everything else running there, so it is also worth running this while
the other core is busy (`--busy`: a spinning process on it).

    python bench/threads.py [--busy]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import torch
import torch.nn.functional as F

from ticketlab.config import ModelConfig
from ticketlab.models import build_model

CASES = [("lenet300_100", (1, 28, 28), 60, 200), ("lenet300_100", (1, 28, 28), 512, 40),
         ("conv4", (1, 28, 28), 60, 8), ("resnet20", (3, 32, 32), 128, 4)]


def ms_per_step(name: str, shape: tuple[int, int, int], batch: int, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    model = build_model(ModelConfig(name=name), shape, 10, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    times = []
    for step in range(steps + 3):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step >= 3:  # warm-up steps are not timed
            times.append(time.perf_counter() - started)
    return 1000 * sorted(times)[len(times) // 2]


def spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", action="store_true", help="keep the other core busy while measuring")
    args = parser.parse_args()
    spinner = multiprocessing.Process(target=spin, daemon=True) if args.busy else None
    if spinner:
        spinner.start()
    try:
        print(f"median ms per SGD step{' (other core busy)' if args.busy else ''}")
        for name, shape, batch, steps in CASES:
            one, two = (ms_per_step(name, shape, batch, steps, t) for t in (1, 2))
            print(f"  {name:<13} batch {batch:<4} 1 thread {one:8.2f}   2 threads {two:8.2f}   "
                  f"2-thread speed / 1-thread speed {one / two:.2f}")
    finally:
        if spinner:
            spinner.terminate()


if __name__ == "__main__":
    main()
