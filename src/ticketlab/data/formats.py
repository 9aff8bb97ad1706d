"""Readers for the standard file formats: IDX (MNIST, Fashion-MNIST), the classic
`mnist.pkl.gz`, and the CIFAR-10 binary version.

Every reader turns a malformed file into one `DataError` line that names the file and
what was expected. Nothing here decides where files live (see `local.py`).
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ticketlab.data.raw import DataError, RawData, check_labels

NUM_CLASSES = 10  # every format here holds ten classes

IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension

CIFAR_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
CIFAR_SHAPE = (3, 32, 32)
_CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then the red, green and blue planes


def read_bytes(path: Path) -> bytes:
    """The bytes of a file, decompressed when its name ends in .gz."""
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a valid gzip file ({error}); expected the gzipped original") from None


# IDX


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The array in an IDX file of unsigned bytes, after checking its magic number and size."""
    data = read_bytes(path)
    kind = "images" if magic == IDX_IMAGES else "labels"
    if len(data) < 4:
        raise DataError(f"{path}: truncated at {len(data)} bytes; expected an IDX file of {kind}")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: expected IDX magic 0x{magic:08x} ({kind}), found 0x{found:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated in the header; expected {header} header bytes, found {len(data)}")
    dims = tuple(int.from_bytes(data[i : i + 4], "big") for i in range(4, header, 4))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(
            f"{path}: expected {expected} bytes of {kind} for dimensions {dims} after the header, "
            f"found {len(data) - header}"
        )
    # A copy: torch wants writable arrays, and frombuffer over bytes is read-only.
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) and labels (N,) from an IDX images file and its labels file."""
    images = read_idx(images_path, IDX_IMAGES)
    labels = read_idx(labels_path, IDX_LABELS)
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path}: has {len(labels)} labels but {images_path.name} has {len(images)} images; "
            "expected one label per image"
        )
    return images[:, None], check_labels(labels, NUM_CLASSES, labels_path)


# The classic mnist.pkl.gz (deeplearning.net)


def _latin1_encode(text: str, encoding: str) -> bytes:
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(text, "latin1"); nothing else is needed.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected encoding {encoding!r}")
    return text.encode("latin1")


def _pickle_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and nothing else, so a file cannot run code."""

    def __init__(self, file: object, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # type: ignore[arg-type]
        self.path = path
        self.allowed = _pickle_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path}: refusing to load {module}.{name}; expected a pickle of numpy arrays only"
            ) from None


def _unpickle(path: Path) -> object:
    data = read_bytes(path)
    try:
        return _ArrayUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as error:  # any failure inside a malformed pickle is a data error
        raise DataError(f"{path}: not a valid pickle ({type(error).__name__}: {error})") from None


def _pixels_to_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    # The classic file stores pixel / 256 in float32; times 256 is exact in float32.
    scaled = x.astype(np.float32, copy=False) * np.float32(256)
    pixels = np.rint(scaled)
    if not (np.array_equal(pixels, scaled) and pixels.min(initial=0) >= 0 and pixels.max(initial=0) <= 255):
        raise DataError(f"{path}: pixel values are not multiples of 1/256 in [0, 1); expected pixel/256")
    return pixels.astype(np.uint8)


def read_mnist_pickle(path: Path) -> RawData:
    """MNIST from the classic `mnist.pkl.gz`: (train, valid, test) of (X = pixel/256, y).

    Train and valid (50k + 10k) are joined, in that order, back into the original 60k
    training set, so the arrays equal those from the IDX files.
    """
    obj = _unpickle(path)
    expected = "a tuple (train, valid, test) of (images (N, 784) float, labels (N,) int)"
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3):
        raise DataError(f"{path}: unexpected content; expected {expected}")
    parts = []
    for part in obj:
        x, y = part if isinstance(part, (tuple, list)) and len(part) == 2 else (None, None)
        if not (
            isinstance(x, np.ndarray)
            and isinstance(y, np.ndarray)
            and x.ndim == 2
            and x.shape[1] == 28 * 28
            and x.dtype.kind == "f"
            and y.shape == (len(x),)
            and y.dtype.kind in "iu"
        ):
            raise DataError(f"{path}: unexpected content; expected {expected}")
        images = _pixels_to_uint8(x, path).reshape(-1, 1, 28, 28)
        parts.append((images, check_labels(y, NUM_CLASSES, path)))
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    return RawData(
        np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y]), test_x, test_y
    )


# CIFAR-10, binary version


def read_cifar_records(data: bytes, where: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) and labels (N,) from the records of one CIFAR-10 batch file."""
    if not data or len(data) % _CIFAR_RECORD:
        raise DataError(
            f"{where}: {len(data)} bytes; expected a whole number of {_CIFAR_RECORD}-byte records "
            "(1 label byte + 3072 pixel bytes)"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = check_labels(records[:, 0], NUM_CLASSES, where)
    return records[:, 1:].reshape(-1, *CIFAR_SHAPE).copy(), labels


def _cifar_raw(batches: dict[str, tuple[np.ndarray, np.ndarray]]) -> RawData:
    train = [batches[name] for name in CIFAR_FILES[:-1]]
    test_x, test_y = batches[CIFAR_FILES[-1]]
    return RawData(
        np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test_x, test_y
    )


def read_cifar_folder(folder: Path) -> RawData:
    """CIFAR-10 from the extracted `cifar-10-batches-bin` folder."""
    return _cifar_raw({name: read_cifar_records(read_bytes(folder / name), folder / name) for name in CIFAR_FILES})


def read_cifar_tar(path: Path) -> RawData:
    """CIFAR-10 from `cifar-10-binary.tar.gz`, read member by member without extracting."""
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # one pass: a gzip stream is slow to seek backwards in
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise DataError(f"{path}: refusing member {member.name!r}; expected relative names without '..'")
                if name.name in CIFAR_FILES and member.isfile():
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    batches[name.name] = read_cifar_records(data, f"{path}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a valid tar.gz archive ({error}); expected cifar-10-binary.tar.gz") from None
    missing = [name for name in CIFAR_FILES if name not in batches]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}; expected the six batch files of cifar-10-batches-bin")
    return _cifar_raw(batches)
