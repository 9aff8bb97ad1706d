"""Run names are a user's data: the names below were made by earlier versions, and a run
asked for with the same settings must still find them (pinned; never edit a name here to
make a change pass)."""

import pytest

from ticketlab.config import DataConfig, ModelConfig, PruneConfig, SearchConfig, TrainConfig
from ticketlab.search.stage import search_run_handle
from ticketlab.sparsity.prune import prune_run_handle
from ticketlab.training.stage import train_run_handle

README_TRAIN = TrainConfig(save_at="0it,3ep")


def trained(data=DataConfig(), model=ModelConfig(), training=README_TRAIN):
    return train_run_handle(data, model, training, None)


def test_training_names_are_those_of_earlier_versions():
    assert trained().run.name == "train-403c3ae29c78"
    other = trained(DataConfig(name="digits"), ModelConfig(name="conv4", shortcut="B"),
                    TrainConfig(steps="5ep", lr=0.1, optimizer="sgd", momentum=0.9, seed=3))
    assert other.run.name == "train-ec7e74dc2c3f"


@pytest.mark.parametrize("cfg, name", [
    (PruneConfig(), "prune-855087b85fa1"),
    (PruneConfig(criterion="magnitude_sign", sparsity=0.9, at="3ep"), "prune-dd346750a9e8"),
    (PruneConfig(scope="layerwise"), "prune-6cd43f0b45e7"),
    (PruneConfig(scope="global", sparsity=0.5), "prune-55047819993b"),  # global was the default: unnamed
    # Units are ranked per layer by default now: the name is that of the run asked for per layer before,
    (PruneConfig(structured=True, criterion="l1_norm", sparsity=0.5), "prune-75bb65ee0f4a"),
    (PruneConfig(structured=True, criterion="l1_norm", sparsity=0.5, scope="layerwise"), "prune-75bb65ee0f4a"),
    # and a global ranking of units, asked for by name, finds the run that was the default then.
    (PruneConfig(structured=True, criterion="l1_norm", sparsity=0.5, scope="global"), "prune-3dda83455972"),
])
def test_prune_names_are_those_of_earlier_versions(cfg, name):
    assert prune_run_handle(trained(), cfg, None).run.name == name


OLD_SEARCH_DEFAULTS = {"start": "random", "neighbourhood": "sawtooth"}  # the defaults before issue 15


@pytest.mark.parametrize("cfg, name", [
    # Searches asked for with what were the defaults keep the names they had then,
    (SearchConfig(**OLD_SEARCH_DEFAULTS), "search-ec2e7a9174d2"),
    (SearchConfig(sparsity=0.8, budget=300, **OLD_SEARCH_DEFAULTS), "search-369ee91a3045"),
    # and so do searchers that read neither option: their unset values are the old defaults.
    (SearchConfig(method="reinforce"), "search-62b5aa7ab3e7"),
    (SearchConfig(method="random", sparsity=0.5), "search-136bb5d79365"),
])
def test_search_names_are_those_of_earlier_versions(cfg, name):
    assert search_run_handle(trained(), cfg, None).run.name == name


def test_the_default_search_is_named_by_what_it_does():
    # Annealing's defaults now start from magnitude-sign's trained mask with an adaptive neighbourhood:
    # another search than the old defaults' run, so another name, the same as when asked for by value.
    new = search_run_handle(trained(), SearchConfig(), None)
    assert new.run.name != "search-ec2e7a9174d2"
    assert new.config.start == "magnitude_sign@final" and new.config.neighbourhood == "adaptive"
    explicit = SearchConfig(start="magnitude_sign@final", neighbourhood="adaptive")
    assert search_run_handle(trained(), explicit, None).run.name == new.run.name
    thesis = SearchConfig(mode="thesis")
    assert search_run_handle(trained(), thesis, None).run.name == search_run_handle(
        trained(), SearchConfig(mode="thesis", **OLD_SEARCH_DEFAULTS), None).run.name
