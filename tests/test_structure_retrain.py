"""Retraining a shrunk network: fine-tuned from its weights, rewound to the dense run's, or from scratch."""

from __future__ import annotations

import csv

import pytest
import torch

import ticketlab
from ticketlab.config import DataConfig, ModelConfig, PruneConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.sparsity.prune import prune
from ticketlab.structure.retrain import MODES, retrain_small, saved_units, small_run_handle
from ticketlab.structure.stage import shrink_run
from ticketlab.training.stage import train

STRUCTURED = PruneConfig(criterion="l1_norm", structured=True, sparsity=0.5, scope="layerwise")


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    runtime = Runtime(runs_dir=str(tmp_path_factory.mktemp("small-runs")), progress=False, device="cpu")
    dense = train(DataConfig(name="digits"), ModelConfig(name="conv2"), TrainConfig(steps="1ep"), runtime)
    shrunk = shrink_run(prune(dense, STRUCTURED, runtime), runtime)
    return runtime, shrunk, {mode: retrain_small(shrunk, mode, runtime) for mode in MODES}


def first_row(result) -> dict[str, str]:
    with open(result.run.file("metrics.csv")) as handle:
        return next(csv.DictReader(handle))


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_the_small_network_and_is_cached(retrained, mode):
    runtime, shrunk, results = retrained
    result = results[mode]
    assert not result.cached
    assert result.summary["mode"] == mode and result.summary["shrink"] == shrunk.run.name
    assert result.summary["parameters"] == shrunk.summary["parameters"]["small"]
    assert result.summary["iterations"] == result.summary["final"]["iteration"]
    again = retrain_small(shrunk, mode, runtime)
    assert again.cached and again.path == result.path and again.summary == result.run.summary()
    small = ticketlab.load(result.model_file)
    assert all(torch.equal(small.state_dict()[key], tensor) for key, tensor in result.state_dict().items())


def test_finetune_starts_from_the_shrunk_weights(retrained):
    _, shrunk, results = retrained
    start = results["finetune"].state_dict("0it")
    shrunk_weights = ticketlab.load(shrunk.model_file).state_dict()
    assert all(torch.equal(start[key], tensor) for key, tensor in shrunk_weights.items())
    assert float(first_row(results["finetune"])["val_acc"]) == shrunk.summary["metrics"]["val_acc"]


def test_rewind_starts_from_the_kept_slices_of_the_dense_init(retrained):
    _, shrunk, results = retrained
    dense = shrunk.source.train.state_dict("0it")
    units = saved_units(shrunk.model_file)
    start = results["rewind"].state_dict("0it")
    conv1, conv2 = units["features.conv1"], units["features.conv2"]
    fc1, fc2 = units["classifier.fc1"], units["classifier.fc2"]
    assert torch.equal(start["features.conv2.weight"], dense["features.conv2.weight"][conv2][:, conv1])
    assert torch.equal(start["classifier.fc2.weight"], dense["classifier.fc2.weight"][fc2][:, fc1])
    assert torch.equal(start["classifier.fc3.bias"], dense["classifier.fc3.bias"])
    assert results["rewind"].summary["start_iteration"] == 0


def test_scratch_starts_from_a_fresh_init_of_the_small_architecture(retrained):
    _, _, results = retrained
    starts = {mode: results[mode].state_dict("0it")["features.conv2.weight"] for mode in MODES}
    assert starts["scratch"].shape == starts["finetune"].shape
    assert not torch.equal(starts["scratch"], starts["finetune"])
    assert not torch.equal(starts["scratch"], starts["rewind"])


def test_bad_mode_and_unsaved_rewind_step_are_refused_before_anything_is_written(retrained):
    runtime, shrunk, _ = retrained
    with pytest.raises(TicketlabError, match="finetune, rewind, scratch"):
        retrain_small(shrunk, "prune-again", runtime)
    with pytest.raises(TicketlabError, match="no checkpoint '10it'"):
        retrain_small(shrunk, "rewind", runtime, rewind="10it")
    assert not small_run_handle(shrunk, "rewind", "10it", runs_dir=runtime.runs_dir).path.exists()
