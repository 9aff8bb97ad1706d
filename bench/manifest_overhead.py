"""The cost of recording and checking artifacts' SHA-256 (manifest.py), in one process.

The same cached training run twice per round, into fresh run directories: once as it is
(every checkpoint, resume point and metrics file hashed into the run's manifest as it is
written) and once with recording switched off. Then the check a finished run gets each
time it is asked for again (`Run.reusable`: every recorded file hashed), against the bare
existence check it replaced. Rounds alternate; medians are reported.

    python bench/manifest_overhead.py [--model lenet300_100] [--dataset mnist5k] [--epochs 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from unittest import mock

from ticketlab.config import DataConfig, ModelConfig, Runtime, TrainConfig
from ticketlab.training.stage import train


def timed_training(data: DataConfig, model: ModelConfig, training: TrainConfig, record: bool) -> float:
    with tempfile.TemporaryDirectory() as root:
        runtime = Runtime(runs_dir=root, progress=False)
        started = time.perf_counter()
        if record:
            train(data, model, training, runtime)
        else:
            with mock.patch("ticketlab.store.writing_run", return_value=None):
                train(data, model, training, runtime)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet300_100")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data, model = DataConfig(name=args.dataset), ModelConfig(name=args.model)
    training = TrainConfig(steps=f"{args.epochs}ep", save_at=f"0it,1ep,{max(args.epochs // 2, 1)}ep")
    timed_training(data, model, training, record=True)  # warm-up: data parsed and cached, kernels loaded
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for record in (False, True):
            times[record].append(timed_training(data, model, training, record))
    bare, recorded = statistics.median(times[False]), statistics.median(times[True])
    print(f"{args.model} on {args.dataset}, {args.epochs} epochs: without manifest {bare:.3f} s, "
          f"with {recorded:.3f} s, ratio {recorded / bare:.3f}")

    with tempfile.TemporaryDirectory() as root:
        done = train(data, model, training, Runtime(runs_dir=root, progress=False))
        checks = {"exists": [], "verified": []}
        for _ in range(20):
            started = time.perf_counter()
            assert done.run.done
            checks["exists"].append(time.perf_counter() - started)
            started = time.perf_counter()
            assert done.run.reusable(force=False)
            checks["verified"].append(time.perf_counter() - started)
        size = sum(p.stat().st_size for p in done.path.rglob("*") if p.is_file()) / 1e6
        print(f"asking for the finished run again ({size:.1f} MB of files): existence check "
              f"{1e3 * statistics.median(checks['exists']):.3f} ms, every file verified "
              f"{1e3 * statistics.median(checks['verified']):.2f} ms")


if __name__ == "__main__":
    main()
