"""A study of 8 independent stages run serially, on 2 local worker processes and as Ray tasks on
a local Ray of 2 CPUs, in one process.

The stages: 8 lottery tickets (4 masks × 2 sparsities) of one LeNet-300-100 trained on
mnist5k, each retrained for the dense run's length: a `compare` section's nodes. The dense
run is trained first and shared; each executor then gets a fresh runs directory holding only
it, so each does the same 8 retrainings. Worker start-up (spawned processes importing torch;
Ray starting its instance and workers) is included in the time.

    python bench/study_parallel.py [--epochs 30]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from ticketlab.config import DataConfig, MaskMethod, ModelConfig, PruneConfig, Runtime, TrainConfig
from ticketlab.experiments.sections import SECTIONS, Context
from ticketlab.experiments.sections.compare import Compare
from ticketlab.experiments.study import run_study

COMPARE = Compare(tuple(MaskMethod(name, PruneConfig(criterion=name))
                        for name in ("magnitude", "random", "snip", "magnitude_sign")), (0.5, 0.8))
EXECUTORS = {"serial": dict(workers=1), "2 workers": dict(workers=2), "Ray, 2 CPUs": dict(backend="ray")}


def nodes(training: TrainConfig, root: Path) -> list:
    context = Context(DataConfig(name="mnist5k"), ModelConfig(name="lenet300_100"), training,
                      Runtime(runs_dir=str(root), progress=False))
    return SECTIONS["compare"].nodes(COMPARE, context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    training = TrainConfig(steps=f"{args.epochs}ep", save_at="0it")
    with tempfile.TemporaryDirectory() as scratch:
        dense_root = Path(scratch) / "dense"
        dense, *tickets = nodes(training, dense_root)
        dense.make(*dense.args)  # the shared dense run
        seconds = {}
        for label, options in EXECUTORS.items():
            root = Path(scratch) / label.replace(" ", "_").replace(",", "")
            shutil.copytree(dense_root, root)
            study = nodes(training, root)  # its dense node finds the copied run done
            started = time.perf_counter()
            outcome = run_study(study, progress=False, **options)
            seconds[label] = time.perf_counter() - started
            assert not outcome.failed and len(outcome.done) == len(study), outcome
    serial = seconds["serial"]
    print(f"{len(tickets)} ticket retrainings of LeNet-300-100 on mnist5k, {args.epochs} epochs each: "
          + ", ".join(f"{label} {s:.1f} s ({serial / s:.2f}x)" for label, s in seconds.items())
          + f"; Ray / 2 workers: {seconds['Ray, 2 CPUs'] / seconds['2 workers']:.2f}")


if __name__ == "__main__":
    main()
