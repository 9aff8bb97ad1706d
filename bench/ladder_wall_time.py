"""A lottery ladder's training time level by level, on two kernels: two runs dirs of the same
`ticketlab lottery` command, one with --kernels dense and one with --kernels auto (the runs have
the same names). Prints the BENCHMARKS.md table: each level's Trainer.wall_time on both, the
ratio, the layers on sparse kernels, the final test accuracy on both, and how many mask entries
agree.

    PYTHONPATH=src .venv/bin/python bench/ladder_wall_time.py RUNS_DENSE RUNS_AUTO
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ticketlab import paths
from ticketlab.sparsity.mask import Mask


def levels(runs: Path) -> dict[str, dict]:
    """Each level run's summary by run name; the dense training as level 0."""
    found = {}
    for summary in runs.glob("level-*/summary.json"):
        found[summary.parent.name] = json.loads(summary.read_text())
    for summary in runs.glob("train-*/summary.json"):
        found[summary.parent.name] = {"level": 0, "remaining": 1.0} | json.loads(summary.read_text())
    return found


def agreement(a: Path, b: Path) -> float:
    if not (a / paths.MASK).exists():  # the dense training
        return 1.0
    first, second = Mask.load(a / paths.MASK), Mask.load(b / paths.MASK)
    same = sum(int((first[name] == second[name]).sum()) for name in first)
    return same / sum(first[name].numel() for name in first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dense", type=Path)
    parser.add_argument("auto", type=Path)
    args = parser.parse_args()
    dense, auto = levels(args.dense), levels(args.auto)
    print("| level | weights kept | dense s | auto s | ratio | auto's sparse layers | test acc dense | test acc auto "
          "| masks equal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    totals = [0.0, 0.0]
    for name in sorted(dense.keys() & auto.keys(), key=lambda name: dense[name]["level"]):
        d, a = dense[name], auto[name]
        totals[0] += d["wall_time"]
        totals[1] += a["wall_time"]
        print(f"| {d['level']} | {100 * d['remaining']:.1f}% | {d['wall_time']:.1f} | {a['wall_time']:.1f} "
              f"| {d['wall_time'] / a['wall_time']:.2f}× | {', '.join(a['sparse_layers']) or 'none'} "
              f"| {d['final']['test_acc']:.4f} | {a['final']['test_acc']:.4f} "
              f"| {100 * agreement(args.dense / name, args.auto / name):.3f}% |")
    print(f"| all {len(dense.keys() & auto.keys())} | | {totals[0]:.0f} s | {totals[1]:.0f} s "
          f"| {totals[0] / totals[1]:.2f}× | | | | |")
    missing = dense.keys() ^ auto.keys()
    if missing:
        print(f"(levels in one runs dir only, left out: {', '.join(sorted(missing))})")


if __name__ == "__main__":
    main()
