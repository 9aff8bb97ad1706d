"""A user's own data as a ticketlab Dataset: tensors or arrays (x, y), a torch Dataset (or a
DataLoader's), or an .npz file, split by the same rules as the built-in sets.

    data = ticketlab.dataset_from(x, y)                    # test held out, then validation
    data = ticketlab.dataset_from(x, y, test=(x_test, y_test), val_size=1000)
    data = ticketlab.dataset_from(my_torch_dataset)
    data = ticketlab.dataset_from("mine.npz")              # arrays x, y (and x_test, y_test)

The cached stages (ticketlab.train, and through it every stage after) read data again whenever
they run, so `store_arrays` writes in-memory data once as an .npz named by its content, and the
stages read that file as `--dataset npz:PATH` does.

Without a test split, a fixed stratified 20% is held out (never the split seed's to choose);
validation is then drawn from what is left with `split_seed`. Inputs are normalised per channel
(dim 1) with the mean and std of the training part alone, so no statistic comes from validation
or test. Labels must be integers 0..K-1.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticketlab import paths
from ticketlab.data.load import Dataset, Split
from ticketlab.data.raw import DataError, check_labels
from ticketlab.data.splits import HOLDOUT_SEED, split_indices
from ticketlab.store import atomic_path

TEST_SHARE = 0.2  # held out when no test split is given
NPZ_ARRAYS = ("x", "y", "x_test", "y_test")


def dataset_from(x: Any, y: Any = None, *, test: tuple[Any, Any] | None = None, val_size: int | None = None,
                 split_seed: int = 0, name: str = "user") -> Dataset:
    """Split and normalise a user's data (see the module docstring) into a Dataset."""
    if isinstance(x, (str, Path)):
        if y is not None or test is not None:
            raise DataError("give an .npz file alone: its arrays x, y (and x_test, y_test) are the data")
        path = Path(x)
        x, y, test = read_npz(path)
        name = path.stem if name == "user" else name
    elif y is None:
        x, y = _stack(x)
    images, labels = _as_arrays(x, y, "the data")
    if test is None:
        rest, held = _hold_out(labels)
        test_x, test_y = images[held], labels[held]
        images, labels = images[rest], labels[rest]
    else:
        test_x, test_y = _as_arrays(*test, "the test split")
        if test_x.shape[1:] != images.shape[1:]:
            raise DataError(f"test inputs are {tuple(test_x.shape[1:])} each, training inputs "
                            f"{tuple(images.shape[1:])}; expected the same shape")
    classes = int(max(labels.max(), test_y.max())) + 1
    val_size = max(1, len(labels) // 10) if val_size is None else val_size
    train, val = split_indices(len(labels), val_size, split_seed)
    mean, std = _statistics(images[train])
    return Dataset(name=name, train=_split(images[train], labels[train], mean, std),
                   val=_split(images[val], labels[val], mean, std), test=_split(test_x, test_y, mean, std),
                   input_shape=tuple(images.shape[1:]), num_classes=classes,
                   source=f"{name}: {len(labels)} training and validation, {len(test_y)} test inputs",
                   augment=False, black=tuple((-mean / std).tolist()))


def store_arrays(data: Any, directory: Path) -> Path:
    """Write a user's data (an (x, y) pair of tensors or arrays, or a torch Dataset or DataLoader)
    as directory/data/<digest>.npz, unless that file is there already; returns its path. The
    digest is the SHA-256 of the arrays, and the file's bytes depend on nothing else (fixed zip
    timestamps), so the same data is one file and names the same runs every time."""
    if isinstance(data, Dataset):
        raise DataError("a split Dataset is for fit; the cached stages split the data themselves: give the "
                        "(x, y) arrays, a torch Dataset, or an .npz file")
    x, y = data if isinstance(data, tuple) and len(data) == 2 else _stack(data)
    arrays = dict(zip(("x", "y"), _as_arrays(x, y, "the data")))
    digest = hashlib.sha256()
    for key, array in arrays.items():
        digest.update(f"{key} {array.dtype.str} {array.shape}\n".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    path = directory / paths.user_data_file(digest.hexdigest()[:16])
    if not path.exists():
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
            for key, array in arrays.items():
                with archive.open(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w",
                                  force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return path


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """x and y (and x_test with y_test, if there) of an .npz file; pickled objects are refused."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = {key: arrays[key] for key in arrays.files if key in NPZ_ARRAYS}
            extra = sorted(set(arrays.files) - set(NPZ_ARRAYS))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; expected an .npz file with arrays x and y") from None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not a readable .npz file ({str(error).splitlines()[0]}); expected arrays x "
                        "and y saved with numpy.savez") from None
    missing = [key for key in ("x", "y") if key not in found]
    if missing or extra or (("x_test" in found) != ("y_test" in found)):
        raise DataError(f"{path} holds {', '.join(sorted(found) + extra) or 'no arrays'}; expected x and y, and "
                        "optionally x_test with y_test")
    test = (found["x_test"], found["y_test"]) if "x_test" in found else None
    return found["x"], found["y"], test


def _stack(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (input, label) pair of a torch Dataset (or a DataLoader's), stacked."""
    dataset = getattr(dataset, "dataset", dataset)
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise DataError(f"cannot read a {type(dataset).__name__} as data; expected (x, y) tensors or arrays, a "
                        "torch Dataset of (input, label) pairs, or an .npz file")
    inputs, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"item {i} of the dataset is a {type(item).__name__}; expected an (input, label) pair")
        inputs.append(torch.as_tensor(item[0]))
        labels.append(int(item[1]))
    if not inputs:
        raise DataError("the dataset is empty")
    return torch.stack(inputs), torch.tensor(labels)


def _as_arrays(x: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    images = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float32)
    labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if images.ndim < 2 or labels.shape != (len(images),):
        raise DataError(f"{what}: inputs {tuple(images.shape)} with labels {tuple(labels.shape)}; expected inputs "
                        "(N, ...) and N labels")
    if not np.issubdtype(labels.dtype, np.integer) and not np.array_equal(labels, np.round(labels)):
        raise DataError(f"{what}: labels are {labels.dtype} with fractions; expected class numbers 0..K-1")
    if not np.isfinite(images).all():
        raise DataError(f"{what}: inputs hold NaN or infinite values")
    return images, check_labels(labels.astype(np.int64), int(labels.max()) + 1 if labels.size else 1, what)


def _hold_out(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, test): a fixed stratified TEST_SHARE of each class."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(round(TEST_SHARE * len(members)))
        if count == 0 or count == len(members):
            raise DataError(f"class {label} has {len(members)} inputs, too few to hold out a test share; give "
                            "test=(x_test, y_test)")
        held.append(rng.permutation(members)[:count])
    test = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), test), test


def _statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (dim 1) mean and std over the training inputs (a constant channel: std 1)."""
    axes: Sequence[int] = tuple(d for d in range(images.ndim) if d != 1)
    mean, std = images.mean(axis=axes), images.std(axis=axes)
    return mean.astype(np.float32), np.where(std > 0, std, 1).astype(np.float32)


def _split(x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Split:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    normalised = (x - mean.reshape(shape)) / std.reshape(shape)
    return Split(torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32)), torch.from_numpy(y))
