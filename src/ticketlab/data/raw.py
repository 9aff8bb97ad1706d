"""Raw data as every source hands it over, and the error for bad or missing data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ticketlab.config import TicketlabError


class DataError(TicketlabError):
    """Data that is missing, corrupt, or not in the expected format."""


@dataclass(frozen=True)
class RawData:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,), for the training and test sets."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True)
class Found:
    """Data located somewhere, not yet read."""

    files: tuple[Path, ...]  # what the arrays are read from; their identity keys the parsed-array cache
    source: str  # where the data came from, in words
    read: Callable[[], RawData]


def check_labels(y: np.ndarray, num_classes: int, where: str | Path) -> np.ndarray:
    """Labels as int64, after checking that they lie in 0..num_classes-1."""
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)][0]
        raise DataError(f"{where}: label {bad} out of range; expected labels 0..{num_classes - 1}")
    return y.astype(np.int64)
