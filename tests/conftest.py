import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """No test reads the user's data or cache, or writes runs into the working directory."""
    cache = tmp_path_factory.getbasetemp() / "cache"  # shared across tests: parsed data is reused
    monkeypatch.setenv("TICKETLAB_CACHE", str(cache))
    monkeypatch.delenv("TICKETLAB_DATA", raising=False)
    monkeypatch.setenv("TICKETLAB_RUNS", str(tmp_path_factory.mktemp("runs")))
