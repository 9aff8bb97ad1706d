"""Where data files sit in a folder: the layouts people already have on disk.

For a data root R, a data set is looked for in R/<name>, then in torchvision's layout
(R/MNIST/raw, R/FashionMNIST/raw), then in R itself. R itself comes last because MNIST and
Fashion-MNIST use the same file names: files directly in R are taken for whichever of the
two is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from ticketlab.data.formats import CIFAR_FILES, read_cifar_folder, read_cifar_tar, read_idx_pair, read_mnist_pickle
from ticketlab.data.raw import DataError, Found, RawData

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_PICKLE = "mnist.pkl.gz"
CIFAR_TAR = "cifar-10-binary.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-bin"


class IncompleteData(DataError):
    """A folder holds some, but not all, of the files of a data set."""


def _folders(root: Path, subfolders: tuple[str, ...]) -> Iterator[Path]:
    for sub in (*subfolders, ""):
        if (root / sub).is_dir():
            yield root / sub


def _files(folder: Path, names: tuple[str, ...], suffixes: tuple[str, ...] = ("",)) -> tuple[Path, ...] | None:
    """The named files in folder, each with the first suffix that exists: all of them, or None
    when none is there; some but not all is an error."""
    files = [next((folder / (name + s) for s in suffixes if (folder / (name + s)).is_file()), None) for name in names]
    if all(file is None for file in files):
        return None
    missing = [name for name, file in zip(names, files) if file is None]
    if missing:
        raise IncompleteData(f"{folder}: missing {', '.join(missing)}; expected all of {', '.join(names)}")
    return tuple(files)  # type: ignore[arg-type]


def _read_idx_files(files: tuple[Path, ...]) -> RawData:
    train_images, train_labels, test_images, test_labels = files
    return RawData(*read_idx_pair(train_images, train_labels), *read_idx_pair(test_images, test_labels))


def _find_idx(root: Path, subfolders: tuple[str, ...], pickle_ok: bool) -> Found | None:
    for folder in _folders(root, subfolders):
        files = _files(folder, IDX_FILES, suffixes=("", ".gz"))
        if files:
            return Found(files, f"IDX files in {folder}", partial(_read_idx_files, files))
        pickle = folder / MNIST_PICKLE
        if pickle_ok and pickle.is_file():
            return Found((pickle,), f"classic pickle {pickle}", partial(read_mnist_pickle, pickle))
    return None


def find_mnist(root: Path) -> Found | None:
    """MNIST as the four IDX files (gzipped or not) or as the classic mnist.pkl.gz."""
    return _find_idx(root, ("mnist", "MNIST/raw"), pickle_ok=True)


def find_fashion(root: Path) -> Found | None:
    """Fashion-MNIST as the four IDX files (gzipped or not)."""
    return _find_idx(root, ("fashion", "FashionMNIST/raw"), pickle_ok=False)


def find_cifar10(root: Path) -> Found | None:
    """CIFAR-10 as the extracted cifar-10-batches-bin folder or as cifar-10-binary.tar.gz."""
    for folder in _folders(root, ("cifar10",)):
        for batches in (folder / CIFAR_FOLDER, folder):
            files = _files(batches, CIFAR_FILES)
            if files:
                return Found(files, f"CIFAR-10 batch files in {batches}", partial(read_cifar_folder, batches))
        tar = folder / CIFAR_TAR
        if tar.is_file():
            return Found((tar,), f"archive {tar}", partial(read_cifar_tar, tar))
    return None
