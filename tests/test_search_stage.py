import dataclasses
import json

import pytest
import torch

from ticketlab.config import DataConfig, ModelConfig, PruneConfig, Runtime, SearchConfig, TicketlabError, TrainConfig
from ticketlab.search import stage as stage_module
from ticketlab.search.base import SamplingSearcher
from ticketlab.search.searchers import SEARCHERS
from ticketlab.search.stage import objective_score, search
from ticketlab.sparsity.prune import prune
from ticketlab.training.stage import train


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    return Runtime(runs_dir=str(tmp_path_factory.mktemp("search-runs")), progress=False)


@pytest.fixture(scope="module")
def mlp(runtime):
    return train(DataConfig(name="digits"), ModelConfig(name="lenet300_100", bias=False),
                 TrainConfig(steps="2ep", save_at="0it,1ep"), runtime)


@pytest.fixture(scope="module")
def conv(runtime):
    return train(DataConfig(name="digits"), ModelConfig(name="conv2"), TrainConfig(steps="1ep"), runtime)


WEIGHTS = SearchConfig(budget=60, val_size=100, at="1ep")


def test_a_weight_search_is_cached_reproducible_and_writes_its_files(mlp, runtime):
    result = search(mlp, WEIGHTS, runtime)
    assert not result.cached
    names = {p.name for p in result.path.iterdir()}
    assert {"mask.safetensors", "history.csv", "summary.json", "report.txt"} <= names
    assert "state.pt" not in names  # removed once the search finished
    mask = result.mask()
    total = 64 * 300 + 300 * 100 + 100 * 10  # every weight of LeNet-300-100 without biases
    assert mask.total() == total and mask.total() - mask.kept() == round(0.8 * total)
    history = result.history()
    assert len(history) == 60 and history[-1]["best"] == result.summary["best"]["score"]
    summary = result.summary
    assert summary["evaluations"] == 60 and summary["objective_images"] == summary["held_out_images"] == 100
    assert set(summary["best"]["held_out"]) == {"val_rest", "test"}
    assert 0 <= summary["best"]["held_out"]["test"]["accuracy"] <= 1
    again = search(mlp, WEIGHTS, runtime)
    assert again.cached and again.summary == summary
    redone = search(mlp, WEIGHTS, Runtime(runs_dir=runtime.runs_dir, progress=False, force=True))
    assert not redone.cached and redone.mask() == mask and redone.history() == history


def test_the_default_search_starts_from_magnitude_signs_trained_mask(mlp, runtime):
    result = search(mlp, WEIGHTS, runtime)
    assert result.config.start == "magnitude_sign@final" and result.config.neighbourhood == "adaptive"
    ticket = prune(mlp, PruneConfig(criterion="magnitude_sign", sparsity=WEIGHTS.sparsity), runtime).mask()
    summary = result.summary
    assert summary["start_score"] == objective_score(mlp, WEIGHTS, ticket)  # the same mask, at the searched step
    assert summary["best"]["score"] >= summary["start_score"]
    assert set(summary["start_held_out"]) == {"val_rest", "test"}
    assert [row["h"] for row in result.history()[1:4]] == [1, 1, 1]  # single swaps first from a start mask


def test_a_filter_search_in_thesis_mode_masks_whole_filters(conv, runtime):
    cfg = SearchConfig(granularity="filter", mode="thesis", sparsity=0.5, budget=40, val_size=100, layer_min=0.25)
    result = search(conv, cfg, runtime)
    mask = result.mask()
    conv1 = mask["features.conv1.weight"]
    filters = conv1.flatten(1).all(1)
    assert not conv1[~filters].any()  # whole filters kept or pruned
    assert int(filters.sum()) >= 16  # layer_min: a quarter of the 64 filters
    assert result.summary["units"] == 64 + 64 + 256 + 256 and result.summary["kept"] == 320
    assert (result.path / "mask_running_mean.safetensors").exists()
    assert "held_out" in result.summary["best_running_mean"]
    floors = 16 + 16 + 64 + 64
    assert [row["h"] for row in result.history()[1:3]] == [320 - floors] * 2  # h0: every kept unit above a floor


@pytest.mark.parametrize("cfg", [
    SearchConfig(method="random", budget=15, val_size=100),
    SearchConfig(method="greedy", budget=15, val_size=100, start="magnitude", at="final"),
])
def test_baselines_and_a_criterion_start(mlp, runtime, cfg):
    result = search(mlp, cfg, runtime)
    assert result.summary["evaluations"] == 15 and len(result.history()) == 15
    assert result.mask().sparsity() == pytest.approx(0.8, abs=1e-4)


def test_a_search_starts_from_another_runs_trained_mask(mlp, runtime):
    trained = prune(mlp, PruneConfig(criterion="magnitude_sign", sparsity=0.8, at="final", compare="0it"), runtime)
    cfg = SearchConfig(method="greedy", budget=10, val_size=100, at="0it", start=trained.run.name)
    result = search(mlp, cfg, runtime)
    first = result.history()[0]
    assert first["candidate"] == objective_score(mlp, cfg, trained.mask(), runtime)  # the start is that mask
    assert result.summary["best"]["score"] >= first["candidate"]  # greedy never ends below its start
    with pytest.raises(TicketlabError, match="keeps .* a search at sparsity 0.9 keeps"):
        search(mlp, dataclasses.replace(cfg, sparsity=0.9), runtime)
    with pytest.raises(TicketlabError, match="no run 'prune-000000000000'"):
        search(mlp, dataclasses.replace(cfg, start="prune-000000000000"), runtime)


def test_a_layerwise_criterion_start_is_the_mask_a_prune_of_units_makes(conv, runtime):
    # A prune of units ranks within each layer by default; start_scope layerwise starts from that mask.
    ticket = prune(conv, PruneConfig(criterion="l1_norm", structured=True, sparsity=0.7, at="final"), runtime).mask()
    cfg = SearchConfig(method="greedy", granularity="filter", sparsity=0.7, budget=1, val_size=100,
                       start="l1_norm@final", start_scope="layerwise")
    layerwise = search(conv, cfg, runtime)  # one evaluation: the best mask is the start
    assert layerwise.mask() == ticket
    assert layerwise.summary["start_score"] == objective_score(conv, cfg, ticket, runtime)
    ranked_globally = search(conv, dataclasses.replace(cfg, start_scope="global"), runtime)
    assert ranked_globally.run.name != layerwise.run.name and ranked_globally.mask() != ticket


@pytest.mark.parametrize("cfg, killed_at, resumed_from", [
    (SearchConfig(budget=50, val_size=100, seed=3), 35, 30),
    # A step of a gradient searcher spends 4: its 20th score is at step 77, the last state saved at 73.
    (SearchConfig(method="edgepopup", budget=150, val_size=100, seed=3), 20, 73),
])
def test_an_interrupted_search_resumes_to_the_same_result(mlp, runtime, tmp_path, monkeypatch, cfg, killed_at,
                                                          resumed_from):
    whole = search(mlp, cfg, Runtime(runs_dir=str(tmp_path / "whole"), progress=False))
    interrupted = Runtime(runs_dir=str(tmp_path / "interrupted"), progress=False)
    monkeypatch.setattr(stage_module, "CHECKPOINT_EVERY", 10)
    real = stage_module.make_evaluator

    def failing(*args, **kwargs):
        evaluator = real(*args, **kwargs)
        score = evaluator.score

        def score_until_killed(keep, move=None):
            if evaluator.evaluations == killed_at:
                raise KeyboardInterrupt
            return score(keep, move)

        evaluator.score = score_until_killed
        return evaluator

    monkeypatch.setattr(stage_module, "make_evaluator", failing)
    with pytest.raises(KeyboardInterrupt):
        search(mlp, cfg, interrupted)
    path = whole.path.parent.parent / "interrupted" / whole.run.name
    assert (path / "state.pt").exists() and not (path / "summary.json").exists()
    monkeypatch.setattr(stage_module, "make_evaluator", real)
    resumed = search(mlp, cfg, interrupted)
    assert resumed.summary["resumed_from"] == resumed_from
    assert resumed.history() == whole.history() and resumed.mask() == whole.mask()


@pytest.mark.parametrize("cfg, message", [
    (SearchConfig(sparsity=0.0, val_size=100), "sparsity must be in \\(0, 1\\)"),
    (SearchConfig(sparsity=1.0, val_size=100), "sparsity must be in \\(0, 1\\)"),
    (SearchConfig(budget=0, val_size=100), "budget must be at least 1"),
    (SearchConfig(at="3ep", val_size=100), "step 3ep is after the end of training"),
    (SearchConfig(at="2ep", val_size=100), "no checkpoint '2ep'"),
    (SearchConfig(val_size=500), "asks for 500 validation images but digits holds 200"),
    (SearchConfig(val_size=100, layer_min=0.5, start="random"), "fewer than the .* floors need"),
    (SearchConfig(val_size=100, layer_min=0.5), "magnitude_sign@final start mask keeps .* below its floor"),
    (SearchConfig(val_size=100, start="magnitude@9ep"), "step 9ep is after the end of training"),
    (SearchConfig(val_size=100, start="l1_norm"), "scores units, but the search is per weight"),
    (SearchConfig(val_size=100, start="oracle"), "unknown criterion 'oracle'"),
    (SearchConfig(val_size=100, start_scope="local"), "unknown start_scope 'local'; expected one of global, layerwise"),
    (SearchConfig(val_size=100, start="magnitude", layer_min=0.1), "magnitude start mask keeps .* below its floor"),
])
def test_bad_input_is_one_clear_error_and_nothing_is_written(mlp, runtime, cfg, message):
    before = sorted(p.name for p in mlp.path.parent.iterdir())
    with pytest.raises(TicketlabError, match=message) as error:
        search(mlp, cfg, runtime)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in mlp.path.parent.iterdir()) == before


def test_the_summary_is_plain_json(mlp, runtime):
    summary = json.loads((search(mlp, WEIGHTS, runtime).path / "summary.json").read_text())
    assert summary["method"] == "anneal" and summary["best"]["step"] <= 60
    assert isinstance(summary["t0"], float) and torch.isfinite(torch.tensor(summary["t0"]))


def test_validation_size_effect_table(tmp_path, capsys):
    from ticketlab.cli import main

    runs = str(tmp_path / "runs")
    assert main(["train", "--dataset", "digits", "--no-bias", "--epochs", "2", "--runs-dir", runs, "--quiet"]) == 0
    name = capsys.readouterr().out.strip().splitlines()[-1].split("/")[-1]
    assert main(["search", "random", "--run", name, "--runs-dir", runs, "--at", "final", "--sparsity", "0.5",
                 "--budget", "20", "--val-sizes", "20,100,all", "--quiet", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [row["val_size"] for row in rows] == [20, 100, 200]
    assert rows[-1]["val_rest_acc"] is None and rows[0]["val_rest_acc"] is not None
    assert all(row["gap_to_test"] == pytest.approx(row["search_score"] - row["test_acc"]) for row in rows)


class LayerByLayer(SamplingSearcher):
    """A searcher as a user would add one: random masks that keep the same share of every layer."""

    name = "layer-by-layer"
    label = "layer by layer"

    @classmethod
    def check(cls, cfg):
        if cfg.method == cls.name and cfg.layer_min:
            raise TicketlabError("layer-by-layer keeps every layer's share; it has no layer_min")

    @classmethod
    def build(cls, evaluator, cfg, generator, features):
        searcher = cls(evaluator, cfg.budget, generator)
        searcher.sparsity = cfg.sparsity
        return searcher

    def sample(self):
        keep = torch.zeros(self.evaluator.space.size, dtype=torch.bool)
        for layer in self.evaluator.space.layers:
            size = layer.slice.stop - layer.slice.start
            kept = size - round(size * self.sparsity)
            keep[layer.slice.start + torch.randperm(size, generator=self.generator)[:kept]] = True
        return keep


def test_a_new_searcher_is_one_class_and_one_registry_entry(mlp, runtime, monkeypatch):
    monkeypatch.setitem(SEARCHERS, LayerByLayer.name, LayerByLayer)
    cfg = dataclasses.replace(WEIGHTS, method="layer-by-layer", budget=12)
    result = search(mlp, cfg, runtime)
    assert result.summary["evaluations"] == 12 and result.summary["method"] == "layer-by-layer"
    assert all(layer.sparsity == pytest.approx(0.8, abs=0.01) for layer in result.mask().layers())
    assert search(mlp, cfg, runtime).cached
    with pytest.raises(TicketlabError, match="layer-by-layer keeps every layer's share"):
        search(mlp, dataclasses.replace(cfg, layer_min=0.1), runtime)
    with pytest.raises(TicketlabError, match="unknown method 'other'; expected one of anneal, random, greedy"):
        search(mlp, dataclasses.replace(cfg, method="other"), runtime)


@pytest.mark.parametrize("method", ["edgepopup", "supermask"])
def test_masks_learned_by_gradient_are_search_stages_with_their_cost_counted(mlp, runtime, method):
    cfg = dataclasses.replace(WEIGHTS, method=method, budget=130)
    result = search(mlp, cfg, runtime)
    summary = result.summary
    assert summary["evaluations"] == 129  # 1 + 32 steps of 4: one evaluation and a training pass of 3
    assert summary["images_forward"] == 129 * 100 and summary["start_score"] < summary["best"]["score"]
    assert all(layer.sparsity == pytest.approx(0.8, abs=1e-3) for layer in result.mask().layers())
    history = result.history()
    assert len(history) == 33 and history[-1]["loss"] < history[1]["loss"]
    tracked = [row["step"] for row in history if row["held_out_best"] is not None]
    assert tracked == [101, 129]  # the first step past 100, and the last one the budget allows
    assert search(mlp, cfg, runtime).cached


def test_the_best_mask_is_tracked_on_held_out_validation_along_the_search(mlp, runtime):
    result = search(mlp, dataclasses.replace(WEIGHTS, budget=250, seed=4), runtime)
    history = result.history()
    tracked = {row["step"]: row["held_out_best"] for row in history if row["held_out_best"] is not None}
    assert sorted(tracked) == [100, 200, 250]  # every TRACK_EVERY evaluations, and at the last
    # the last is the best mask's accuracy on the rest of validation, as the summary reports it
    assert tracked[250] == result.summary["best"]["held_out"]["val_rest"]["accuracy"]
    assert all(0 <= value <= 1 for value in tracked.values())


def test_each_searchers_own_options_are_config_fields_under_its_own_help_heading(capsys):
    from ticketlab.cli import main
    from ticketlab.search.searchers import option_sections

    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    assert all(set(searcher.options) <= fields for searcher in SEARCHERS.values())
    assert option_sections() == {"options of anneal, greedy": ["neighbourhood", "t0", "cooling", "restarts", "tabu"],
                                 "options of reinforce": ["policy_lr", "entropy", "baseline_decay", "episodes",
                                                          "hidden", "reward_sign"],
                                 "options of edgepopup, supermask": ["score_lr"]}
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = capsys.readouterr().out
    help_lines = text[text.index("\nsearch:"):]  # past the usage lines
    assert help_lines.index("options of anneal, greedy:") < help_lines.index("\n  --t0") \
        < help_lines.index("options of reinforce:") < help_lines.index("\n  --policy-lr")
