import json
from pathlib import Path

import pytest

from pinned import PINNED_RUN_NAMES, finished_runs
from ticketlab.cli import main
from ticketlab.config import TicketlabError
from ticketlab.experiments.preset import load_preset, parse_preset
from ticketlab.presets import preset_names

# Presets with structured sections are run by tests/test_structured_presets.py.
SMOKED = [name for name in preset_names() if load_preset(name).smoke and "structured" not in load_preset(name).sections]


def test_every_preset_parses_and_describes_itself():
    assert {"quickstart", "network-pruning-digits", "network-pruning-digits-l1", "lth-lenet", "lth-conv4",
            "resnet20-imp", "seed003-exp1", "seed003-exp2", "sa-thesis-mlp", "sa-thesis-cnn",
            "sa-thesis-cnn-mnist"} <= set(preset_names())
    for name in preset_names():
        assert load_preset(name).description
    import ticketlab  # the public API's load_preset, imported when asked for

    assert ticketlab.load_preset("quickstart") == load_preset("quickstart")


def test_every_example_file_parses_and_describes_itself():
    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        assert load_preset(str(path)).description, path.name


def test_lth_lenet_is_the_papers_setting():
    preset = load_preset("lth-lenet")
    assert (preset.train.optimizer, preset.train.lr, preset.train.batch_size, preset.train.steps) == \
        ("adam", 1.2e-3, 60, "50000it")
    lottery = preset.sections["lottery"].config
    assert (lottery.rate, lottery.output_rate, lottery.rewind, lottery.levels) == \
        (0.2, 0.1, "0it", 20)
    assert preset.fallback.data.name == "mnist5k" and preset.fallback.train.steps == "5000it"


@pytest.mark.parametrize("name", SMOKED)
def test_smoke_variants_run_end_to_end(name, tmp_path, capsys):
    assert main(["run", name, "--smoke", "--quiet", "--json", "--runs-dir", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "smoke" in result["metrics"]["data_source"]
    assert finished_runs(tmp_path) == PINNED_RUN_NAMES[name]
    if "lottery" in result:
        rows = result["lottery"]["rows"]
        assert rows[0]["procedure"] == "ticket" and rows[0]["remaining_pct"] == 100.0
        assert rows[-1]["remaining_pct"] < 100.0
    else:
        rows = result["comparison"]["rows"]
        preset = load_preset(name).smoked()
        assert len(rows) == len(preset.sections["compare"].methods) * len(preset.sections["compare"].sparsities)
        assert all(0 <= row["rewind_acc_mean"] <= 1 and 0 <= row["trained_acc_mean"] <= 1 for row in rows)


@pytest.mark.parametrize("name", ["lth-conv4", "resnet20-imp", "reinforce-vs-anneal-cifar"])
def test_cifar_presets_without_cifar_stop_with_the_data_error(name, tmp_path, capsys):
    assert main(["run", name, "--quiet", "--runs-dir", str(tmp_path)]) == 2
    assert "cifar-10-binary.tar.gz" in capsys.readouterr().err


def test_bad_smoke_and_lottery_sections():
    with pytest.raises(TicketlabError, match="smoke cannot change model"):
        parse_preset("x", "smoke: {model: {name: conv4}}")
    with pytest.raises(TicketlabError, match="replicates must be a whole number"):
        parse_preset("x", "lottery: {levels: 2}\nreplicates: 0")
    with pytest.raises(TicketlabError, match="no smoke variant"):
        load_preset("network-pruning-digits").smoked()


def test_the_preset_listing_names_the_data_each_preset_needs(capsys):
    from ticketlab.cli import main

    assert main(["presets", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out.splitlines()[-1])["presets"]
    assert listing["quickstart"]["data"] == "mnist5k" and listing["lth-lenet"]["data"] == "mnist (else mnist5k)"
    assert listing["sa-thesis-cnn"]["data"].startswith("cifar10") and all(p["description"] for p in listing.values())
