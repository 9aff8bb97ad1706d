"""The shrink stage: a structured prune run becomes a smaller model that computes what the masked one did."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

import ticketlab
from ticketlab.config import DataConfig, ModelConfig, PruneConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.data import load_data
from ticketlab.sparsity.prune import prune
from ticketlab.store import Run
from ticketlab.structure.saving import export_onnx, save_model
from ticketlab.structure.stage import find_mask_run, shrink_run, units_from_mask
from ticketlab.training.stage import init_model, train

STRUCTURED = PruneConfig(criterion="l1_norm", structured=True, sparsity=0.5, scope="layerwise")


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory):
    runtime = Runtime(runs_dir=str(tmp_path_factory.mktemp("shrink-runs")), progress=False, device="cpu")
    trained = train(DataConfig(name="digits"), ModelConfig(name="vgg11"), TrainConfig(steps="2ep"), runtime)
    source = prune(trained, STRUCTURED, runtime)
    return runtime, source, shrink_run(source, runtime)


def masked_model(source):
    data = load_data(source.train.data, device="cpu")
    model = init_model(source.train.model_config, data, source.train.training.seed)
    model.load_state_dict(source.train.state_dict("final"))
    source.mask().apply(model)
    return model.eval(), data


def test_loaded_model_computes_what_the_masked_one_did(shrunk):
    _, source, result = shrunk
    masked, data = masked_model(source)
    small = ticketlab.load(result.model_file)
    assert not small.training
    with torch.no_grad():
        assert torch.allclose(small(data.test.x), masked(data.test.x), atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in masked.parameters())


def test_summary_reports_sizes_speed_and_the_masked_accuracy(shrunk):
    _, source, result = shrunk
    summary = result.summary
    assert summary["source"] == source.run.name and summary["step"] == "final"
    assert summary["parameters"]["small"] < summary["parameters"]["dense"]
    assert summary["macs"]["small"] < summary["macs"]["dense"]
    assert set(summary["latency_ms"]["small"]) == {"batch_1", "batch_64"}
    assert summary["speedup"]["macs"] > 1
    assert summary["max_difference"] <= 1e-5
    assert summary["units"] == source.summary["units"]
    for split in ("val", "test"):
        assert summary["metrics"][f"{split}_acc"] == source.summary["masked"][f"{split}_acc"]
        assert summary["metrics"][f"{split}_loss"] == pytest.approx(source.summary["masked"][f"{split}_loss"], abs=1e-5)


def test_a_second_call_is_cached_and_a_run_is_found_by_name(shrunk):
    runtime, source, result = shrunk
    found = find_mask_run(source.run.name, runtime.runs_dir)
    assert found.run.path == source.run.path and found.config == source.config
    again = shrink_run(found, runtime)
    assert again.cached and again.path == result.path and again.summary == result.run.summary()


def test_an_unstructured_mask_is_refused_before_anything_is_written(shrunk):
    runtime, source, _ = shrunk
    unstructured = prune(source.train, PruneConfig(criterion="magnitude", sparsity=0.5), runtime)
    with pytest.raises(TicketlabError, match="structured mask"):
        shrink_run(unstructured, runtime)
    assert not Run("shrink", {"mask": unstructured.run.name, "step": "final"}, runtime.runs_dir).path.exists()
    model, _ = masked_model(source)
    with pytest.raises(TicketlabError, match="not a structured mask"):
        units_from_mask(model, unstructured.mask())


def test_units_from_a_structured_mask_round_trip(shrunk):
    _, source, _ = shrunk
    model, _ = masked_model(source)
    units = units_from_mask(model, source.mask())
    assert {name: {"kept": int(k.sum()), "total": len(k)} for name, k in units.items()} == source.summary["units"]


def test_a_corrupt_model_file_is_a_one_line_error(shrunk, tmp_path):
    _, _, result = shrunk
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(result.model_file.read_bytes()[:200])
    for path in (damaged, tmp_path / "missing.safetensors"):
        with pytest.raises(TicketlabError) as error:
            ticketlab.load(path)
        assert "\n" not in str(error.value)


def test_weights_that_do_not_fit_the_saved_units_are_refused(shrunk, tmp_path):
    _, source, result = shrunk
    dense, _ = masked_model(source)
    every_unit = {group.name: torch.ones(group.size, dtype=torch.bool) for group in dense.channel_groups()}
    save_model(ticketlab.load(result.model_file), tmp_path / "wrong.safetensors", every_unit, source.train.model_config)
    with pytest.raises(TicketlabError, match="corrupt or not a saved ticketlab model"):
        ticketlab.load(tmp_path / "wrong.safetensors")


def test_onnx_export(shrunk, tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the optional onnx package")
    _, _, result = shrunk
    export_onnx(ticketlab.load(result.model_file), tmp_path / "small.onnx", (1, 8, 8))
    graph = onnx.load(str(tmp_path / "small.onnx"))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["input"]


def test_onnx_export_without_onnx_names_the_package(shrunk, tmp_path, monkeypatch):
    _, _, result = shrunk
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else find_spec(name, *a))
    with pytest.raises(TicketlabError, match="pip install onnx"):
        export_onnx(ticketlab.load(result.model_file), tmp_path / "small.onnx", (1, 8, 8))
    assert not (tmp_path / "small.onnx").exists()


def test_a_model_outside_the_zoo_is_saved_only_once_traced(tmp_path):
    with pytest.raises(TicketlabError, match="save_model saves a Sequential it can rebuild: trace the model"):
        save_model(torch.nn.Sequential(torch.nn.Linear(4, 2)), tmp_path / "small.safetensors", {})
    assert not (tmp_path / "small.safetensors").exists()


def test_round_to_keeps_multiples_of_units_in_every_group_and_names_its_own_run(shrunk):
    runtime, source, _ = shrunk
    rounded = prune(source.train, dataclasses.replace(STRUCTURED, sparsity=0.7, round_to=8), runtime)
    counts = rounded.summary["units"]
    assert counts and all(c["kept"] % 8 == 0 or c["kept"] == c["total"] for c in counts.values())
    plain = prune(source.train, dataclasses.replace(STRUCTURED, sparsity=0.7), runtime)
    assert any(c["kept"] % 8 for c in plain.summary["units"].values())  # unrounded, some are not
    assert rounded.run.name != plain.run.name
    assert plain.run.name == prune(source.train, dataclasses.replace(STRUCTURED, sparsity=0.7, round_to=1),
                                   runtime).run.name
    with pytest.raises(TicketlabError, match="--round-to rounds the units .* criterion magnitude prunes single"):
        prune(source.train, PruneConfig(criterion="magnitude", round_to=8), runtime)
