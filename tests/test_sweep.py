import csv

import pytest
import torch

from ticketlab.analysis.sweep import COLUMNS, hidden_weights, sweep, unit_mask, unit_norms, weight_mask
from ticketlab.config import DataConfig, ModelConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.data import load_data
from ticketlab.models import build_model
from ticketlab.sparsity.mask import output_layer_names
from ticketlab.store import read_json
from ticketlab.training.loop import evaluate
from ticketlab.training.stage import init_model, train

KS = (0.0, 0.5, 0.9, 0.999)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet-300-100 trained briefly on digits, and its sweep over KS (shared: training is the cost)."""
    runtime = Runtime(runs_dir=str(tmp_path_factory.mktemp("runs")), progress=False)
    with pytest.MonkeyPatch.context() as patch:  # conftest's isolation is per test; this fixture outlives one
        patch.setenv("TICKETLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run = train(DataConfig(name="digits"), ModelConfig(name="lenet300_100", bias=False),
                    TrainConfig(steps="3ep"), runtime)
        result = sweep(run, KS, runtime=runtime)
    return run, result, runtime


def trained_model(run):
    dataset = load_data(run.data)
    model = init_model(run.model_config, dataset, run.training.seed)
    model.load_state_dict(run.state_dict("best"))
    return model, dataset


def rows_of(result, method):
    return [row for row in result.rows if row["method"] == method]


def test_table_has_one_row_per_k_and_method(trained):
    _, result, _ = trained
    assert [(row["k"], row["method"]) for row in result.rows] == [(k, m) for k in KS for m in ("weight", "unit")]
    with open(result.path / "sweep.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS
        assert len(list(reader)) == 2 * len(KS)


def test_k0_is_the_dense_network_exactly(trained):
    run, result, _ = trained
    model, dataset = trained_model(run)
    loss, acc = evaluate(model, dataset.test)
    assert result.dense_test_acc == acc
    for row in result.rows[:2]:
        assert row["k"] == 0 and row["sparsity"] == 0
        assert (row["test_acc"], row["test_loss"]) == (acc, loss)


def test_accuracy_falls_to_chance_when_nearly_every_unit_is_pruned(trained):
    _, result, _ = trained
    assert result.dense_test_acc > 0.8
    assert rows_of(result, "unit")[-1]["test_acc"] < 0.25


def test_weight_pruning_reaches_k_in_every_hidden_layer(trained):
    run, result, _ = trained
    model, _ = trained_model(run)
    names = hidden_weights(model)
    assert names == ["fc1.weight", "fc2.weight"]
    total = sum(model.get_parameter(n).numel() for n in names)
    for row in rows_of(result, "weight"):
        assert abs(row["sparsity"] - row["k"]) <= len(names) / total
        mask = weight_mask(model, row["k"])
        for name in names:
            assert int((~mask[name]).sum()) == round(mask[name].numel() * row["k"])


def test_unit_pruning_removes_whole_units_and_their_input_columns(trained):
    run, result, _ = trained
    model, _ = trained_model(run)
    mask = unit_mask(model, 0.5)
    rows_pruned = ~mask["fc1.weight"].any(1)
    assert int(rows_pruned.sum()) == 150
    assert not mask["fc2.weight"][:, rows_pruned].any()  # fc2 reads nothing from a pruned fc1 unit
    # The pruned units are the ones with the smallest incoming-weight norms.
    norms = model.fc1.weight.detach().norm(dim=1)
    assert norms[rows_pruned].max() <= norms[~rows_pruned].min()
    assert rows_of(result, "unit")[1]["sparsity"] > 0.5  # input columns of pruned units count too


def test_output_layer_is_never_touched(trained):
    run, _, _ = trained
    model, _ = trained_model(run)
    state = run.state_dict("best")
    output = output_layer_names(model)
    for make in (weight_mask, unit_mask):
        for k in KS:
            model.load_state_dict(state)
            mask = make(model, k)
            assert not set(output) & set(mask)
            mask.apply(model)
            for name in output:
                assert torch.equal(model.get_parameter(name), state[name])


def test_the_histograms_count_what_survives_each_k_over_the_dense_range(trained):
    run, result, _ = trained
    saved = read_json(result.path / "histograms.json")
    model, _ = trained_model(run)
    dense = {name: value.clone() for name, value in model.state_dict().items()}
    names = hidden_weights(model)
    for name in names:
        assert saved["ranges"]["weight"][name] == [0.0, pytest.approx(float(dense[name].abs().max()))]
    for k in KS:
        model.load_state_dict(dense)
        weight_mask(model, k).apply(model)
        for name in names:
            counts = saved["counts"]["weight"][f"{k:g}"][name]
            assert len(counts) == saved["bins"] and sum(counts) == int((model.get_parameter(name) != 0).sum())
        model.load_state_dict(dense)
        unit_mask(model, k).apply(model)
        for group, norms in unit_norms(model).items():
            assert sum(saved["counts"]["unit"][f"{k:g}"][group]) == int((norms > 0).sum())
    weights_left = [sum(saved["counts"]["weight"][f"{k:g}"][names[0]]) for k in KS]
    assert weights_left == sorted(weights_left, reverse=True) and weights_left[-1] < weights_left[0] / 100
    assert {p.name for p in result.path.iterdir()} >= {"sweep.csv", "histograms.json", "summary.json"}
    assert not list(result.path.rglob("*.tmp")) and not list(result.path.rglob("*.png"))


def test_a_finished_sweep_is_returned_without_recomputing(trained):
    run, result, runtime = trained
    stamps = {p: p.stat().st_mtime_ns for p in result.path.rglob("*") if p.is_file() and p.name != ".lock"}
    again = sweep(run, KS[::-1] + KS[:1], runtime=runtime)  # order and repeats do not change the sweep
    assert again.cached and again.path == result.path
    assert again.rows == result.rows and again.dense_test_acc == result.dense_test_acc
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_sparsity_that_is_no_number_in_0_1_is_refused(trained):
    run, _, runtime = trained
    with pytest.raises(TicketlabError, match="must be in"):
        sweep(run, (0.5, 1.0), runtime=runtime)
    with pytest.raises(TicketlabError, match="must be numbers"):
        sweep(run, ("0.5", "half"), runtime=runtime)


def test_conv_units_are_filters_pruned_with_their_batchnorm():
    model = build_model(ModelConfig(name="vgg11"), (3, 32, 32), 10, generator=torch.Generator().manual_seed(0))
    norms = unit_norms(model)
    first = model.get_parameter("layers.0.conv.weight")
    assert torch.allclose(norms["layers.0.conv"], first.detach().flatten(1).norm(dim=1))
    mask = unit_mask(model, 0.25)
    pruned = ~mask["layers.0.conv.weight"].flatten(1).any(1)
    assert int(pruned.sum()) == round(0.25 * first.shape[0])
    assert not mask["layers.0.bn.weight"][pruned].any() and not mask["layers.0.bn.bias"][pruned].any()


def test_layer_sensitivity_prunes_each_layer_alone_and_is_cached(trained):
    from ticketlab.analysis.sensitivity import sensitivity

    run, result, runtime = trained
    made = sensitivity(run, [0.9, 0.5], runtime=runtime)
    layers = ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert [(row["layer"], row["sparsity"]) for row in made.rows] == [(layer, k) for layer in layers
                                                                       for k in (0.5, 0.9)]
    model, data = trained_model(run)
    dense = dict(model.named_parameters())
    for row in made.rows[:2]:  # fc1 alone at 0.5, at 0.9: by hand, the others left as trained
        pruned, _ = trained_model(run)
        weight = dict(pruned.named_parameters())["fc1.weight"]
        kept = round(weight.numel() * (1 - row["sparsity"]))
        keep = weight.detach().abs().flatten().argsort(descending=True)[:kept]
        flat = torch.zeros(weight.numel(), dtype=torch.bool)
        flat[keep] = True
        with torch.no_grad():
            weight.mul_(flat.view_as(weight))
        assert evaluate(pruned, data.val)[1] == pytest.approx(row["val_acc"], abs=2 / len(data.val.y))
        assert torch.equal(dict(pruned.named_parameters())["fc2.weight"], dense["fc2.weight"])
    assert made.summary["dense_test_acc"] == pytest.approx(result.dense_test_acc)
    assert sensitivity(run, [0.5, 0.9], runtime=runtime).cached  # the same ladder, in any order
    with pytest.raises(TicketlabError, match="outside"):
        sensitivity(run, [1.0], runtime=runtime)
