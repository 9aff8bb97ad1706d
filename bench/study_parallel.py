"""A study of 8 independent stages run serially and on 2 local worker processes, in one process.

The stages: 8 lottery tickets (4 masks × 2 sparsities) of one LeNet-300-100 trained on
mnist5k, each retrained for the dense run's length. The dense run is trained first and shared;
each executor then gets a fresh runs directory holding only it, so both do the same 8
retrainings. Worker start-up (spawned processes importing torch) is included in the time.

    python bench/study_parallel.py [--epochs 30]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from ticketlab.comparison import comparison_nodes
from ticketlab.config import DataConfig, MaskMethod, ModelConfig, PruneConfig, Runtime, TrainConfig
from ticketlab.experiments.study import run_study
from ticketlab.training.stage import train

METHODS = [MaskMethod(name, PruneConfig(criterion=name)) for name in ("magnitude", "random", "snip", "magnitude_sign")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    data, model = DataConfig(name="mnist5k"), ModelConfig(name="lenet300_100")
    training = TrainConfig(steps=f"{args.epochs}ep", save_at="0it")
    with tempfile.TemporaryDirectory() as scratch:
        dense_root = Path(scratch) / "dense"
        nodes = comparison_nodes(data, model, training, METHODS, [0.5, 0.8], Runtime(runs_dir=str(dense_root)))
        train(*nodes[0].args[:3], Runtime(runs_dir=str(dense_root), progress=False))  # the shared dense run
        seconds = {}
        for workers in (1, 2):
            root = Path(scratch) / f"workers{workers}"
            shutil.copytree(dense_root, root)
            runtime = Runtime(runs_dir=str(root), progress=False)
            study = comparison_nodes(data, model, training, METHODS, [0.5, 0.8], runtime)
            started = time.perf_counter()
            outcome = run_study(study, workers)
            seconds[workers] = time.perf_counter() - started
            assert not outcome.failed, outcome.failed
    print(f"8 ticket retrainings of LeNet-300-100 on mnist5k, {args.epochs} epochs each: serial {seconds[1]:.1f} s, "
          f"2 workers {seconds[2]:.1f} s, speedup {seconds[1] / seconds[2]:.2f}x")


if __name__ == "__main__":
    main()
