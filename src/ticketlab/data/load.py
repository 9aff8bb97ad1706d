"""load_data: find the raw data, split it, and put normalised tensors on a device."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ticketlab.config import DataConfig, cache_root
from ticketlab.data.cache import PARSED, known_digests, read_parsed
from ticketlab.data.download import REMOTE, DownloadError, download as download_files
from ticketlab.data.identity import file_sha256, user_fingerprint
from ticketlab.data.local import IncompleteData
from ticketlab.data.raw import DataError, Found, RawData
from ticketlab.data.registry import DatasetSpec, get_spec
from ticketlab.data.splits import split_indices

NPZ_PREFIX = "npz:"  # a dataset name "npz:PATH": the user's arrays x, y (and x_test, y_test) in PATH


@dataclass
class Split:
    x: torch.Tensor  # float32 (N, C, H, W), normalised with the data set's mean and std
    y: torch.Tensor  # int64 (N,)


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    source: str  # where the data came from, in words
    augment: bool  # whether training batches should go through augment_batch
    black: tuple[float, ...]  # a black pixel after normalisation, per channel: the crop's padding
    fingerprint: str | None = None  # a user's copy of a built-in data set: its arrays' SHA-256 (data.identity)


def data_root(data_dir: str | Path | None) -> Path | None:
    """The folder the user keeps data in: data_dir, else $TICKETLAB_DATA, else none."""
    root = data_dir if data_dir is not None else os.environ.get("TICKETLAB_DATA") or None
    if root is None:
        return None
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; expected a folder holding data files")
    return root


def data_cache(cache_dir: str | Path | None) -> Path:
    """Where downloads and parsed arrays go: cache_dir, else $TICKETLAB_CACHE, else ~/.cache/ticketlab."""
    return cache_root(cache_dir) / "data"


def _find(spec: DatasetSpec, data_dir: str | Path | None, cache: Path, download: bool) -> tuple[Found, bool]:
    """The data found, and whether it is files in a data folder (data_dir or the cache), which
    may be anyone's copy, rather than an installed package's or generated data."""
    if spec.find_files:
        root = data_root(data_dir)
        found = spec.find_files(root) if root else None
        if found:
            return found, True
        try:
            found = spec.find_files(cache)
        except IncompleteData:
            found = None  # an interrupted download, completed below
        if found:
            return found, True
    # Installed packages come before downloads: an installed, checksum-verified local copy
    # should never cost a network attempt.
    if spec.find_bundled:
        found = spec.find_bundled()
        if found:
            return found, False
    reason = ""
    if spec.name in REMOTE:
        if not download:
            reason = " (downloading is off)"
        else:
            try:
                download_files(spec.name, cache)
                found = spec.find_files(cache) if spec.find_files else None
                if found:
                    return found, True
            except DownloadError as error:
                reason = f" and {error}"
    raise DataError(f"{spec.name}: no data found{reason}; {spec.help}")


def _check(raw: RawData, spec: DatasetSpec, source: str) -> None:
    for part, x, y in (("training", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
        if x.dtype != np.uint8 or tuple(x.shape[1:]) != spec.input_shape or y.shape != (len(x),):
            raise DataError(
                f"{source}: {part} images {x.dtype} {tuple(x.shape)} with {len(y)} labels; "
                f"expected uint8 (N, {', '.join(map(str, spec.input_shape))}) with N labels"
            )


def _split(x: np.ndarray, y: np.ndarray, spec: DatasetSpec, device: torch.device) -> Split:
    # Converted to float on the device: a uint8 copy is a quarter of the size to move.
    images = torch.from_numpy(np.ascontiguousarray(x)).to(device).float()
    mean = torch.tensor(spec.mean, device=device).view(-1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(-1, 1, 1)
    images = images.div_(255).sub_(mean).div_(std)
    return Split(images, torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device))


def load_data(
    cfg: DataConfig,
    *,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """The data set cfg.name, split into train / val / test tensors on `device`.

    Sources, in order: files in data_dir (else $TICKETLAB_DATA), the user cache, an installed
    package, a download into the cache (when `download`). The test set is the official one
    (or a fixed stratified hold-out); validation is cfg.val_size images drawn from the
    training set with cfg.split_seed; cfg.train_size then keeps the first n training images.
    """
    if cfg.name.startswith(NPZ_PREFIX):
        return _user_npz(cfg, torch.device(device))
    spec = get_spec(cfg.name)
    found, in_folder = _find(spec, data_dir, data_cache(cache_dir) / spec.name, download)
    raw, digests = read_parsed(found, data_cache(cache_dir) / PARSED, spec.name)
    _check(raw, spec, found.source)
    copy = user_fingerprint(spec.name, found, lambda: digests) if in_folder else None
    val_size = spec.val_size if cfg.val_size is None else cfg.val_size
    train, val = split_indices(len(raw.train_y), val_size, cfg.split_seed, cfg.train_size)
    device = torch.device(device)
    return Dataset(
        name=spec.name,
        train=_split(raw.train_x[train], raw.train_y[train], spec, device),
        val=_split(raw.train_x[val], raw.train_y[val], spec, device),
        test=_split(raw.test_x, raw.test_y, spec, device),
        input_shape=spec.input_shape,
        num_classes=spec.num_classes,
        source=found.source if copy is None else f"{found.source} (user copy, sha256 {copy})",
        augment=spec.augment if cfg.augment is None else cfg.augment,
        black=tuple(-m / s for m, s in zip(spec.mean, spec.std)),
        fingerprint=copy,
    )


def _npz_path(cfg: DataConfig) -> Path:
    return Path(cfg.name[len(NPZ_PREFIX):]).expanduser()


def _user_npz(cfg: DataConfig, device: torch.device) -> Dataset:
    from ticketlab.data.user import dataset_from  # it builds on this module's Dataset

    if cfg.train_size is not None or cfg.augment:
        raise DataError(f"{cfg.name}: train_size and augment are for the built-in data sets; give the arrays "
                        "you want to train on")
    data = dataset_from(_npz_path(cfg), val_size=cfg.val_size, split_seed=cfg.split_seed, name=cfg.name)
    moved = {part: Split(split.x.to(device), split.y.to(device))
             for part, split in (("train", data.train), ("val", data.val), ("test", data.test))}
    return replace(data, **moved, source=f"{data.source}, sha256 {data_digest(cfg)}")


def data_digest(cfg: DataConfig, data_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> str | None:
    """What names the runs trained on this data beside its config: the SHA-256 of a user's data
    file (an npz: name), or of a user's copy of a built-in data set (data.identity), so changed
    data is new data; None for a built-in set's canonical data, and for data not found (it
    cannot be trained on, and is named as canonical until it is there)."""
    if not cfg.name.startswith(NPZ_PREFIX):
        spec = get_spec(cfg.name)
        try:
            found, in_folder = _find(spec, data_dir, data_cache(cache_dir) / spec.name, download=False)
        except DataError:
            return None
        if not in_folder:
            return None
        store = data_cache(cache_dir) / PARSED
        # A source seen before is named from the cache's record of it, without reading its arrays.
        return user_fingerprint(spec.name, found,
                                lambda: known_digests(found, store) or read_parsed(found, store, spec.name).digests)
    path = _npz_path(cfg)
    try:
        return file_sha256(path)  # read once per version of the file: a study names every run from it
    except OSError:
        raise DataError(f"{path} cannot be read; expected an .npz file with arrays x and y") from None


def data_shape(cfg: DataConfig) -> tuple[tuple[int, ...], int]:
    """The input shape and class count of a data set, without loading it (a user's file is read)."""
    if not cfg.name.startswith(NPZ_PREFIX):
        spec = get_spec(cfg.name)
        return spec.input_shape, spec.num_classes
    from ticketlab.data.user import read_npz

    x, y, test = read_npz(_npz_path(cfg))
    return tuple(x.shape[1:]), int(max(y.max(), test[1].max() if test else 0)) + 1
