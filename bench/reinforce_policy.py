"""The REINFORCE agent's per-update costs over a per-weight space, each way against the other, in one process.

    PYTHONPATH=src python bench/reinforce_policy.py [--units 266200] [--repeats 5]

LeNet-300-100's weights are 266,200 units (search per weight). Per policy update the agent
scores every unit with its MLP (features -> 64 -> 64 -> 1) and backpropagates through it;
per episode it draws the kept units from the noisy scores. Timed, median of the repeats,
one thread:
- the policy's forward and backward in one pass over all units, against in blocks of
  reinforce.POLICY_BLOCK units (what UnitPolicy does);
- picking the top 10% of noisy scores by a stable full argsort, against topk (what draw does;
  the same indices in the same order, checked).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ticketlab.search.features import FEATURES
from ticketlab.search.reinforce import DEFAULT_HIDDEN, POLICY_BLOCK, UnitPolicy


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    work()  # warm up: the first call allocates
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=266_200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(args.units, len(FEATURES), generator=generator)
    policy = UnitPolicy(features, DEFAULT_HIDDEN)
    upstream = torch.randn(args.units, generator=generator)

    def one_pass() -> None:
        policy.zero_grad()
        (policy.net(features).squeeze(1) + policy.offset).backward(upstream)

    def blocks() -> None:
        policy.zero_grad()
        policy().backward(upstream)

    noisy = torch.randn(args.units, generator=generator, dtype=torch.float64)
    kept = args.units // 10
    by_sort = noisy.argsort(descending=True, stable=True)[:kept]
    if not torch.equal(by_sort, noisy.topk(kept).indices):
        raise SystemExit("topk and the stable argsort chose differently")
    print(f"{args.units:,} units, 1 thread, median of {args.repeats}")
    for label, reference, variant in (
            (f"policy forward + backward, one pass / blocks of {POLICY_BLOCK}", one_pass, blocks),
            (f"top {kept:,} of noisy scores, stable argsort / topk",
             lambda: noisy.argsort(descending=True, stable=True)[:kept], lambda: noisy.topk(kept).indices)):
        slow, fast = median_seconds(reference, args.repeats), median_seconds(variant, args.repeats)
        print(f"{label}: {slow * 1e3:.1f} ms / {fast * 1e3:.1f} ms = {slow / fast:.2f}x")


if __name__ == "__main__":
    main()
