"""Downloads from the canonical locations, kept only after their SHA-256 matches.

REMOTE is the one table of what is fetched from where; tests replace it with file:// URLs.
The checksums are those TensorFlow Datasets pins in tensorflow_datasets/url_checksums
(mnist.txt, fashion_mnist.txt, cifar10.txt), cross-checked against other public projects
that pin the same files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ticketlab.data.raw import DataError

TIMEOUT_S = 30
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remote:
    mirrors: tuple[str, ...]  # base URLs, tried in order
    files: Mapping[str, str]  # file name -> SHA-256 of its bytes


REMOTE: dict[str, Remote] = {
    "mnist": Remote(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    "fashion": Remote(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    ),
    "cifar10": Remote(
        ("https://www.cs.toronto.edu/~kriz/",),
        {"cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"},
    ),
}


class DownloadError(DataError):
    """No mirror could be reached for a file (a checksum mismatch is a plain DataError)."""


def fetch(url: str, dest: Path, sha256: str) -> None:
    """Download url to dest: into a temporary file beside it, verified, then renamed into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise DataError(f"{url}: SHA-256 mismatch, expected {sha256}, got {digest.hexdigest()}; nothing was kept")
        os.replace(temp, dest)
    finally:
        Path(temp).unlink(missing_ok=True)


def download(name: str, folder: Path) -> None:
    """Fetch the files of data set `name` that `folder` lacks, trying each mirror in turn."""
    remote = REMOTE[name]
    for filename, sha256 in remote.files.items():
        if (folder / filename).is_file():
            continue
        failures = []
        for mirror in remote.mirrors:
            url = mirror + filename
            log.info("downloading %s", url)
            try:
                fetch(url, folder / filename, sha256)
                break
            except OSError as error:  # unreachable, refused, timed out: try the next mirror
                failures.append(f"{url}: {error}")
        else:
            raise DownloadError(f"download failed ({'; '.join(failures)})")
