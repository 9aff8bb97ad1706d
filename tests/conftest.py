import dataclasses

import pytest
import torch

from ticketlab.data import download

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """No test reads the user's data or cache, writes runs into the working directory, or
    reaches the network (every download mirror points at a file that does not exist)."""
    cache = tmp_path_factory.getbasetemp() / "cache"  # shared across tests: parsed data is reused
    monkeypatch.setenv("TICKETLAB_CACHE", str(cache))
    monkeypatch.delenv("TICKETLAB_DATA", raising=False)
    monkeypatch.setenv("TICKETLAB_RUNS", str(tmp_path_factory.mktemp("runs")))
    for name, remote in list(download.REMOTE.items()):
        offline = dataclasses.replace(remote, mirrors=("file:///nonexistent/ticketlab-test-mirror/",))
        monkeypatch.setitem(download.REMOTE, name, offline)
