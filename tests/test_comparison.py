import pytest

from ticketlab.experiments.comparison import compare_masks
from ticketlab.config import DataConfig, MaskMethod, ModelConfig, PruneConfig, Runtime, SearchConfig, TrainConfig
from ticketlab.search.stage import objective_score
from ticketlab.sparsity.mask import Mask
from ticketlab.store import find_run, read_json
from ticketlab.training.stage import find_train_run


def test_structured_masks_retrain_shrunk_and_every_mask_is_scored_on_one_objective(tmp_path):
    runtime = Runtime(runs_dir=str(tmp_path), progress=False)
    first = SearchConfig(method="anneal", granularity="filter", at="1ep", budget=6, val_size=100)
    methods = [MaskMethod("SA k=1ep", first),
               MaskMethod("SA k=init", SearchConfig(method="anneal", granularity="filter", at="0it", budget=6,
                                                    val_size=100)),
               MaskMethod("magnitude", PruneConfig(criterion="magnitude", at="final"))]
    result = compare_masks(DataConfig(name="digits"), ModelConfig(name="conv2"), TrainConfig(steps="2ep"), methods,
                           [0.5], runtime)
    runs = {run["method"]: run for run in result.runs}
    for name in ("SA k=1ep", "SA k=init"):  # filter masks: the smaller network, trained from the rewind weights
        small, hparams = find_run(runs[name]["ticket_run"], ("small",), runtime.runs_dir)
        assert hparams["mode"] == "rewind" and hparams["rewind"] == "0it"
        shrunk, _ = find_run(hparams["shrink"], ("shrink",), runtime.runs_dir)
        sizes = read_json(shrunk / "summary.json")["parameters"]
        assert read_json(small / "summary.json")["parameters"] == sizes["small"] < sizes["dense"]
    find_run(runs["magnitude"]["ticket_run"], ("ticket",), runtime.runs_dir)  # single weights: masked retraining
    assert runs["SA k=init"]["evaluations"] == 6 and runs["magnitude"]["evaluations"] == 0
    for run in result.runs:  # the first search's objective, whatever objective the mask was made for
        made, hparams = find_run(run["mask_run"], ("search", "prune"), runtime.runs_dir)
        dense = find_train_run(hparams["train"], runtime.runs_dir)
        mask = Mask.load(made / "mask.safetensors")
        assert objective_score(dense, first, mask, runtime) == pytest.approx(run["search_score"], abs=0)
    assert [run["method"] for run in result.runs if run["searched_objective"]] == ["SA k=1ep"]


def test_imp_is_compared_at_each_sparsity_by_a_lottery_whose_levels_reach_it(tmp_path):
    from ticketlab.config import LotteryConfig

    runtime = Runtime(runs_dir=str(tmp_path), progress=False)
    methods = [MaskMethod("magnitude", PruneConfig(criterion="magnitude", at="final")),
               MaskMethod("IMP", LotteryConfig(levels=2))]
    result = compare_masks(DataConfig(name="digits"), ModelConfig(name="lenet300_100"), TrainConfig(steps="1ep"),
                           methods, [0.5, 0.8], runtime)
    for run in (r for r in result.runs if r["method"] == "IMP"):
        # the mask and the ticket are the last level's: retrained from the rewind step under its mask
        assert run["mask_run"] == run["ticket_run"]
        level, hparams = find_run(run["ticket_run"], ("level",), runtime.runs_dir)
        assert hparams["identity"]["level"] == 2 and hparams["lottery"]["rewind"] == "0it"
        assert read_json(level / "summary.json")["remaining"] == pytest.approx(1 - run["sparsity"], abs=2e-3)
        assert run["evaluations"] == 0 and 0 <= run["trained_acc"] <= 1


def test_imp_settings_that_the_comparison_fixes_are_refused(tmp_path, capsys):
    from ticketlab.cli import main

    preset = tmp_path / "imp.yaml"
    preset.write_text("data: {name: digits}\ncompare:\n  sparsities: [0.5]\n  methods:\n"
                      "    - {name: IMP, lottery: {levels: 2, rate: 0.3}}\n")
    assert main(["run", str(preset), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "IMP's rate follows from each compared sparsity" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
