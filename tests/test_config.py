import dataclasses

import pytest

from ticketlab.config import DataConfig, ModelConfig, TicketlabError, TrainConfig, from_dict, non_default, stable_hash
from ticketlab.store import Run
from ticketlab.training.stage import train_identity


def test_hash_covers_only_non_default_fields():
    assert non_default(TrainConfig()) == {}
    assert non_default(TrainConfig(lr=0.1, seed=3)) == {"lr": 0.1, "seed": 3}


def test_run_names_are_stable_across_processes_and_versions():
    # This literal pins the naming scheme: changing it would orphan every user's finished runs.
    identity = train_identity(DataConfig(name="digits"), ModelConfig(), TrainConfig(lr=0.1))
    assert Run("train", identity).name == "train-" + stable_hash(
        {"kind": "train", "data": {"name": "digits"}, "model": {}, "train": {"lr": 0.1}})
    assert stable_hash({"b": 1, "a": [1, 2]}) == "94a786c3662b"
    assert stable_hash({"a": [1, 2], "b": 1}) == "94a786c3662b"


def test_a_new_field_with_a_neutral_default_keeps_old_names():
    @dataclasses.dataclass(frozen=True)
    class Extended(TrainConfig):
        new_option: int = 0

    assert non_default(Extended(lr=0.1)) == non_default(TrainConfig(lr=0.1))


def test_from_dict_coerces_text_and_refuses_unknown_keys():
    cfg = from_dict(TrainConfig, {"lr": "1e-3", "batch_size": "64", "nesterov": "yes"}, "train")
    assert (cfg.lr, cfg.batch_size, cfg.nesterov) == (0.001, 64, True)
    assert from_dict(DataConfig, {"val_size": None}, "data").val_size is None
    with pytest.raises(TicketlabError, match="unknown key"):
        from_dict(TrainConfig, {"learning_rate": 1}, "train")
    with pytest.raises(TicketlabError, match="not a valid float"):
        from_dict(TrainConfig, {"lr": "fast"}, "train")
