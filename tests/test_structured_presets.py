"""The structured-pruning presets: seed003-exp3, earlybird-vgg16, slimming-vgg19 and their MNIST variants."""

import csv
import json
from pathlib import Path

import pytest

from pinned import PINNED_RUN_NAMES, finished_runs
from ticketlab.cli import main
from ticketlab.config import TicketlabError
from ticketlab.experiments.preset import load_preset, parse_preset
from ticketlab.structure import stage
from ticketlab.experiments.structured import EarlyBirdSection, check_sections

CIFAR = ["seed003-exp3", "earlybird-vgg16", "slimming-vgg19"]
MNIST = [f"{name}-mnist" for name in CIFAR]


@pytest.fixture
def no_latency_timing(monkeypatch):
    """Timing 18 batches of 64 through a dense VGG is most of a smoke run's time; the timing
    itself is tested in test_shrink_stage."""
    monkeypatch.setattr(stage, "measure_latency", lambda model, shape, batch: 1.0)


def test_the_presets_parse_with_the_papers_settings():
    exp3 = load_preset("seed003-exp3")
    (plan,) = exp3.sections["structured"].shrink
    assert (exp3.data.name, exp3.model.name, exp3.train.steps, exp3.train.batch_size) == \
        ("cifar10", "resnet20", "160ep", 64)
    assert plan.at == ("10ep", "30ep", "50ep", "100ep") and plan.ratios == (0.3, 0.5)
    assert plan.retrain == ("finetune", "rewind", "scratch") and plan.rewind == "at"
    assert plan.prune.criterion == "bn_scale" and plan.prune.structured and plan.prune.scope == "layerwise"
    early = load_preset("earlybird-vgg16")
    assert early.sections["structured"].earlybird == EarlyBirdSection((0.3, 0.5, 0.7), {"criterion": "bn_scale", "threshold": 0.1})
    assert (early.model.name, early.train.bn_l1, early.sections["structured"].shrink[0].at) == ("vgg16", 1e-4, ("earlybird", "final"))
    slimming = load_preset("slimming-vgg19")
    assert (slimming.model.name, slimming.train.bn_l1, slimming.sections["structured"].shrink[0].ratios) == ("vgg19", 1e-4, (0.7,))
    for cifar, mnist in zip(CIFAR, MNIST):
        big, small = load_preset(cifar), load_preset(mnist)
        assert small.data.name == "mnist5k" and small.model == big.model and small.description
        assert small.train.bn_l1 == big.train.bn_l1 and small.sections["structured"].shrink[0].prune == big.sections["structured"].shrink[0].prune
        assert small.smoked().data.name == "smoke-mnist" and small.smoked().sections["structured"].shrink == big.smoked().sections["structured"].shrink
        if big.sections["structured"].earlybird is not None:
            assert small.sections["structured"].earlybird == big.sections["structured"].earlybird and small.smoked().sections["structured"].earlybird == big.smoked().sections["structured"].earlybird
        check_sections(small.sections["structured"].earlybird, small.sections["structured"].shrink)
        check_sections(big.sections["structured"].earlybird, big.sections["structured"].shrink)


def expected_rows(name: str) -> set[tuple[str, float, str]]:
    preset = load_preset(name).smoked()
    return {(step, ratio, mode) for plan in preset.sections["structured"].shrink for step in plan.at or ("earlybird",)
            for ratio in plan.ratios or preset.sections["structured"].earlybird.ratios for mode in plan.retrain}


# The VGG presets' MNIST variants run the same sections on the same models as their CIFAR
# presets do (checked above); their smoke runs would add half a minute and test nothing new.
@pytest.mark.parametrize("name", [*CIFAR, "seed003-exp3-mnist"])
def test_smoke_variants_prune_shrink_retrain_and_write_the_table(name, tmp_path, capsys, no_latency_timing):
    assert main(["run", name, "--smoke", "--quiet", "--json", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert "smoke" in result["metrics"]["data_source"]
    assert finished_runs(tmp_path) == PINNED_RUN_NAMES[name]
    rows = result["structured"]["rows"]
    assert {(row["at"], row["ratio"], row["mode"]) for row in rows} == expected_rows(name)
    report = Path(result["structured"]["run_dir"])
    with open(report / "table.csv") as table:
        assert len(list(csv.DictReader(table))) == len(rows)
    for row in rows:
        assert row["params_small"] < row["params_dense"] and row["macs_small"] < row["macs_dense"]
        assert 0 <= row["pruned_test_acc"] <= 1 and 0 <= row["retrained_test_acc"] <= 1
        assert row["start"] == {"finetune": row["pruned_at"], "rewind": row["pruned_at"],
                                "scratch": "random init"}[row["mode"]]
    if "earlybird" in result:  # the smoke's threshold of 1 draws each ticket at the first full window
        assert all(epoch == 5 for epoch in result["earlybird"]["found"].values())
        assert {row["pruned_at"] for row in rows} == {"5ep"}
        assert "found at epoch 5" in out
    assert "structured pruning, shrunk and retrained" in out
    page = Path(result["report"]).read_text()  # the study's report shows the surgery, and the early birds
    assert "Physically smaller networks" in page and "Structured pruning: shrunk, then retrained" in page
    assert ("Early-bird tickets" in page) == ("earlybird" in result)


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_presets_without_cifar_stop_with_the_data_error(name, tmp_path, capsys):
    assert main(["run", name, "--quiet", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "cifar-10-binary.tar.gz" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, message", [
    ("shrink: {at: [1ep]}", "shrink must be a list"),
    ("shrink: [{at: [1ep], ratio: [0.5]}]", "unknown key.*ratio"),
    ("shrink: [{at: 1ep, ratios: [0.5]}]", "at must be a non-empty list"),
    ("shrink: [{at: [1ep], ratios: [0.5], prune: {sparsity: 0.5}}]", "sparsity cannot be set here"),
    ("shrink: [{at: [1ep], ratios: [0.5], prune: {criterion: l1_norm, seed: x}}]", "seed: 'x' is not a valid int"),
    ("earlybird: {threshold: 0.1}", "earlybird takes ratios"),
    ("earlybird: {ratios: [0.5], window: 4}", "not window"),
    ("earlybird: {ratios: [0.5], stop: maybe}", "stop: 'maybe' is not a valid bool"),
])
def test_bad_sections_are_one_line_errors_when_parsed(text, message):
    with pytest.raises(TicketlabError, match=message) as error:
        parse_preset("x", text)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("shrink: [{at: [1ep], ratios: [0.5], retrain: [finetune, resume]}]", "unknown retraining mode.*resume"),
    ("shrink: [{ratios: [0.5]}]", "give at .* or an earlybird section"),
    ("shrink: [{at: [earlybird], ratios: [0.5]}]\nearlybird: {ratios: [0.3]}", "ratio.* 0.5 draw no early-bird"),
    ("shrink: [{at: [earlybird], prune: {criterion: l1_norm}}]\nearlybird: {ratios: [0.3]}", "criterion must be"),
    ("shrink: [{at: [1ep], ratios: [1.5]}]", "ratio 1.5 is outside"),
    ("shrink: [{at: [10 epochs], ratios: [0.5]}]", "bad step '10 epochs'"),
    ("shrink: [{at: [1ep], ratios: [0.5], prune: {criterion: magnitude}}]", "scores single weights"),
    ("shrink: [{at: [final], ratios: [0.5], retrain: [rewind], rewind: at}]", "rewind: at needs steps"),
    ("earlybird: {ratios: [0.5], criterion: magnitude}", "cannot draw early birds"),
])
def test_bad_section_values_stop_the_run_before_it_trains(text, message, tmp_path, capsys):
    preset = parse_preset("x", text)
    with pytest.raises(TicketlabError, match=message):
        check_sections(preset.sections["structured"].earlybird, preset.sections["structured"].shrink)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["run", str(bad), "--quiet", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
