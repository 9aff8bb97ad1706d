"""Tiny generated data sets in the shapes of MNIST and CIFAR-10, for `--smoke` runs and tests.

They are not images of anything: each class is a fixed random pattern, and each example
that pattern plus noise, so a network learns them within a few steps. They let a preset
whose real data cannot be had here (CIFAR-10) run end to end on the same architecture.
"""

from __future__ import annotations

import numpy as np

from ticketlab.data.raw import Found, RawData

TRAIN_SIZE, TEST_SIZE, CLASSES = 300, 100, 10


def generate(shape: tuple[int, int, int], seed: int) -> RawData:
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0, 255, size=(CLASSES, *shape))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % CLASSES
        rng.shuffle(labels)
        noisy = prototypes[labels] + rng.normal(0, 60, size=(n, *shape))
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), labels.astype(np.int64)

    train_x, train_y = draw(TRAIN_SIZE)
    test_x, test_y = draw(TEST_SIZE)
    return RawData(train_x, train_y, test_x, test_y)


def find_smoke(shape: tuple[int, int, int], seed: int) -> Found:
    return Found((), f"generated smoke data {'x'.join(map(str, shape))} (not real images)",
                 lambda: generate(shape, seed))
