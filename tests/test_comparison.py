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
    assert (result.path / "best_so_far.png").exists()
