"""Which images go to training, validation and test."""

from __future__ import annotations

import numpy as np

from ticketlab.data.raw import DataError, RawData

# Fixed, so that a held-out test set never depends on the split seed.
HOLDOUT_SEED = 20240601


def hold_out_test(x: np.ndarray, y: np.ndarray, size: int, num_classes: int) -> RawData:
    """A fixed stratified test set (size / num_classes per class) for data without an official one."""
    per_class = size // num_classes
    rng = np.random.default_rng(HOLDOUT_SEED)
    chosen = []
    for label in range(num_classes):
        members = np.flatnonzero(y == label)
        if len(members) <= per_class:
            raise DataError(f"class {label} has {len(members)} images; expected more than {per_class} to hold out")
        chosen.append(rng.permutation(members)[:per_class])
    test = np.sort(np.concatenate(chosen))
    rest = np.setdiff1d(np.arange(len(y)), test)
    return RawData(x[rest], y[rest], x[test], y[test])


def split_indices(
    n: int, val_size: int, seed: int, train_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) into n training images: a permutation seeded by `seed`, val first.

    Training keeps the permuted order, which matters for sources sorted by class.
    """
    if not 0 < val_size < n:
        raise DataError(f"val_size={val_size}: expected 1 to {n - 1} (there are {n} training images)")
    order = np.random.default_rng(seed).permutation(n)
    val, train = order[:val_size], order[val_size:]
    if train_size is not None:
        if not 0 < train_size <= len(train):
            raise DataError(
                f"train_size={train_size}: expected 1 to {len(train)} (training images left after validation)"
            )
        train = train[:train_size]
    return train, val
