import json

import pytest

from ticketlab.cli import main
from ticketlab.config import DataConfig, ModelConfig, PruneConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.sparsity.prune import prune
from ticketlab.training.stage import find_train_run, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    runs = tmp_path_factory.mktemp("prune-runs")
    run = train(DataConfig(name="digits"), ModelConfig(name="lenet300_100"),
                TrainConfig(steps="3ep", save_at="0it,1ep"), Runtime(runs_dir=str(runs), progress=False))
    return run, Runtime(runs_dir=str(runs), progress=False)


def test_magnitude_mask_is_exact_cached_and_scored(trained):
    run, runtime = trained
    result = prune(run, PruneConfig(criterion="magnitude", sparsity=0.9, at="final"), runtime)
    mask = result.mask()
    assert mask.total() == 64 * 300 + 300 * 100 + 100 * 10
    assert mask.total() - mask.kept() == round(0.9 * mask.total())
    weights = run.state_dict("final")
    kept_min = min(weights[n][mask[n]].abs().min().item() for n in mask)
    pruned_max = max(weights[n][~mask[n]].abs().max().item() for n in mask)
    assert pruned_max <= kept_min  # global magnitude: every pruned weight is smaller than every kept one
    summary = result.summary
    assert summary["dense"]["test_acc"] == run.summary["final"]["test_acc"]
    assert 0.0 <= summary["masked"]["val_acc"] <= 1.0
    again = prune(run, PruneConfig(criterion="magnitude", sparsity=0.9, at="final"), runtime)
    assert again.cached and again.mask() == mask


def test_scores_from_an_early_step_and_comparison_with_init(trained):
    run, runtime = trained
    early = prune(run, PruneConfig(criterion="magnitude", sparsity=0.5, at="1ep"), runtime).mask()
    final = prune(run, PruneConfig(criterion="magnitude", sparsity=0.5, at="final"), runtime).mask()
    assert early != final
    sign = prune(run, PruneConfig(criterion="magnitude_sign", sparsity=0.5, compare="0it"), runtime).mask()
    init, trained_weights = run.state_dict("0it"), run.state_dict("final")
    for name in sign:  # with half pruned, no kept weight has flipped sign since init
        flipped = (init[name] * trained_weights[name]) < 0
        assert not (sign[name] & flipped).any()


def test_layerwise_with_a_separate_output_rate(trained):
    run, runtime = trained
    mask = prune(run, PruneConfig(sparsity=0.2, scope="layerwise", output_sparsity=0.1), runtime).mask()
    pruned = {layer.name: layer.pruned for layer in mask.layers()}
    assert pruned == {"fc1.weight": round(0.2 * 64 * 300), "fc2.weight": round(0.2 * 300 * 100),
                      "fc3.weight": round(0.1 * 100 * 10)}


def test_snip_scores_on_validation_batches_and_structured_pruning(trained):
    run, runtime = trained
    snip = prune(run, PruneConfig(criterion="snip", sparsity=0.8, score_batches=2, score_batch_size=50), runtime)
    assert snip.mask().sparsity() == pytest.approx(0.8, abs=1e-5)
    units = prune(run, PruneConfig(criterion="l2_norm", structured=True, sparsity=0.5, scope="layerwise"), runtime)
    fc1 = units.mask()["fc1.weight"]
    rows_kept = fc1.all(dim=1)
    assert int(rows_kept.sum()) == 150 and not fc1[~rows_kept].any()  # whole units, exactly half
    assert units.summary["units"]["fc1"] == {"kept": 150, "total": 300}


@pytest.mark.parametrize("cfg, message", [
    (PruneConfig(sparsity=1.0), "sparsity must be in \\[0, 1\\)"),
    (PruneConfig(criterion="optimal_brain_surgeon"), "unknown criterion"),
    (PruneConfig(criterion="magnitude", structured=True), "scores single weights"),
    (PruneConfig(at="7ep"), "step 7ep is after the end of training"),
    (PruneConfig(at="2ep"), "no checkpoint '2ep'"),
    (PruneConfig(criterion="magnitude_sign", compare="2ep"), "no checkpoint '2ep'"),
    (PruneConfig(parameters="conv9.weight"), "no parameter matches conv9.weight"),
    (PruneConfig(criterion="snip", score_batches=10, score_batch_size=64), "validation images"),
])
def test_bad_input_is_one_clear_error_and_nothing_is_written(trained, cfg, message):
    run, runtime = trained
    before = set(p.name for p in (run.path.parent).iterdir())
    with pytest.raises(TicketlabError, match=message):
        prune(run, cfg, runtime)
    assert set(p.name for p in run.path.parent.iterdir()) == before


def test_prune_and_sweep_commands(trained, capsys):
    run, runtime = trained
    assert main(["prune", "--run", run.run.name, "--runs-dir", runtime.runs_dir, "--criterion", "magnitude_sign",
                 "--sparsity", "0.9", "--scope", "global", "--at", "final", "--quiet", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "pruned 90.00%" in out[0] and any(line.strip().startswith("fc2.weight") for line in out)
    assert json.loads(out[-1])["metrics"]["criterion"] == "magnitude_sign"

    assert main(["sweep", "--run", str(run.path), "--ks", "0,0.5,0.9", "--quiet", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    rows = json.loads(out[-1])["rows"]
    assert len(rows) == 6 and {r["method"] for r in rows} == {"weight", "unit"}

    assert main(["prune", "--run", "train-000000000000", "--runs-dir", runtime.runs_dir]) == 2
    assert "no run 'train-000000000000'" in capsys.readouterr().err


def test_find_train_run_by_path_or_name(trained):
    run, runtime = trained
    assert find_train_run(str(run.path)).summary == run.summary
    assert find_train_run(run.run.name, runtime.runs_dir).path == run.path
