"""Masks learned by gradient (search.gradient): exact counts, frozen weights, a solved toy,
reproduction, exact resumption, and what a step costs."""

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from ticketlab.config import ModelConfig, SearchConfig, TicketlabError
from ticketlab.models import build_model
from ticketlab.search.evaluators import make_evaluator
from ticketlab.search.gradient import TRAIN_COST, EdgePopup, Supermask, layer_counts, top_k
from ticketlab.search.searchers import check_config, get_searcher, resolve
from ticketlab.search.space import unit_space, weight_space
from test_anneal import toy_space


class Vote(nn.Module):
    """Two logits, each a sum of all inputs with weight +1 (class 1) or -1 (class 0): the label is
    the sign of the sum of the first K inputs, so the mask that keeps exactly those inputs' 2K
    weights classifies every image right, and any other mask of 2K weights fewer."""

    def __init__(self, inputs: int):
        super().__init__()
        self.fc = nn.Linear(inputs, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.stack([-torch.ones(inputs), torch.ones(inputs)]))

    def forward(self, x):
        return self.fc(x)


K, INPUTS = 4, 40


def vote_problem(images=512, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(images, INPUTS, generator=generator)
    y = (x[:, :K].sum(1) > 0).long()
    model = Vote(INPUTS)
    return model, {k: v.clone() for k, v in model.state_dict().items()}, x, y


def searcher(method, model, weights, x, y, space=None, seed=0, **options):
    space = space or weight_space(model)
    cfg = resolve(SearchConfig(method=method, sparsity=options.pop("sparsity", 1 - K / INPUTS), **options))
    check_config(cfg)
    evaluator = make_evaluator(model, weights, space, x, y)
    return get_searcher(method).build(evaluator, cfg, torch.Generator().manual_seed(seed), None), evaluator


def test_layer_counts_are_exact_shares_above_the_floors():
    model = build_model(ModelConfig(name="lenet300_100", bias=False), (1, 28, 28), 10)
    space = weight_space(model)
    counts = layer_counts(space, 0.9, 0.0)
    assert sum(counts) == space.size - round(space.size * 0.9)
    assert [round(c / layer.size, 3) for c, layer in zip(counts, space.layers)] == [0.1, 0.1, 0.1]
    # A unit a layer at least: the small layers' floors take more than their shares, the big one gives it back.
    assert layer_counts(toy_space(1, 1, 98), 0.95, 0.0) == [1, 1, 3]
    assert layer_counts(toy_space(3, 100, 100), 0.9, 0.0) == [1, 10, 9]  # the remainders: a tie, the first wins
    units = unit_space(build_model(ModelConfig(name="basiccnn"), (1, 28, 28), 10))
    counts = layer_counts(units, 0.7, 0.25)
    assert counts == [19, 38, 77, 154] and sum(counts) == units.size - round(units.size * 0.7)
    scores = torch.randn(units.size, generator=torch.Generator().manual_seed(0))
    keep = top_k(scores, units, counts)
    for layer, count in zip(units.layers, counts):
        part = keep[layer.slice]
        assert int(part.sum()) == count and scores[layer.slice][part].min() >= scores[layer.slice][~part].max()
    with pytest.raises(TicketlabError, match="fewer than the 4 the layers' floors need"):
        layer_counts(units, 0.999, 0.0)


@pytest.mark.parametrize("method", ["edgepopup", "supermask"])
def test_the_toy_problems_best_mask_is_found_and_no_weight_moves(method):
    model, weights, x, y = vote_problem()
    before = copy.deepcopy(weights)
    search, evaluator = searcher(method, model, weights, x, y, budget=801)
    found = search.run(None, progress=False)
    assert found.best_score == 1.0
    assert found.best.nonzero().flatten().remainder(INPUTS).unique().tolist() == list(range(K))  # the K voters
    assert all(torch.equal(weights[k], before[k]) for k in weights)  # the checkpoint is never written
    assert torch.equal(model.fc.weight, before["fc.weight"])  # nor the module
    assert int(found.best.sum()) == 2 * K


@pytest.mark.parametrize("method", ["edgepopup", "supermask"])
def test_a_step_costs_one_evaluation_and_a_training_pass_of_three(method):
    model, weights, x, y = vote_problem(images=300)
    search, evaluator = searcher(method, model, weights, x, y, budget=23)
    found = search.run(None, progress=False)
    steps = (23 - 1) // (1 + TRAIN_COST)  # 5 steps after the first evaluation; 2 evaluations left unspent
    assert found.evaluations == 1 + steps * (1 + TRAIN_COST) == 21
    assert evaluator.evaluations == 1 + steps == len(found.history)
    assert [row["step"] for row in found.history] == [1, 5, 9, 13, 17, 21]
    assert found.history[0]["loss"] is None and all(row["loss"] > 0 for row in found.history[1:])


@pytest.mark.parametrize("method", ["edgepopup", "supermask"])
def test_a_seeded_search_is_reproducible_and_resumes_exactly(method):
    model, weights, x, y = vote_problem(images=300, seed=2)
    whole, _ = searcher(method, model, weights, x, y, budget=81, seed=3)
    saved = []
    expected = whole.run(None, progress=False, checkpoint=saved.append, checkpoint_every=10)
    assert [state["step"] for state in saved] == [13, 21, 33, 41, 53, 61, 73]  # on crossing each multiple of 10
    again, _ = searcher(method, model, weights, x, y, budget=81, seed=3)
    assert again.run(None, progress=False).history == expected.history
    for state in saved[2::3]:
        resumed, _ = searcher(method, model, weights, x, y, budget=81, seed=99)  # the saved stream wins
        result = resumed.run(None, progress=False, resume=state)
        assert result.history == expected.history and torch.equal(result.best, expected.best)


def test_filter_masks_are_learned_over_units_of_a_cnn():
    model = build_model(ModelConfig(name="basiccnn"), (1, 20, 20), 10, generator=torch.Generator().manual_seed(0))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 1, 20, 20, generator=generator), torch.randint(0, 10, (64,), generator=generator)
    space = unit_space(model)
    search, _ = searcher("edgepopup", model, weights, x, y, space=space, sparsity=0.7, budget=9)
    found = search.run(None, progress=False)
    counts = layer_counts(space, 0.7, 0.0)
    assert [int(found.best[layer.slice].sum()) for layer in space.layers] == counts
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("cfg, message", [
    (SearchConfig(method="edgepopup", score_lr=0.0), "score_lr must be positive"),
    (SearchConfig(method="anneal", score_lr=-1.0), "score_lr must be positive"),  # refused even where unused
    (SearchConfig(method="supermask", mode="thesis"), "supermask learns masks .* no thesis mode"),
    (SearchConfig(method="edgepopup", train_steps=5), "edgepopup learns masks .* does not train candidates"),
])
def test_bad_settings_are_one_clear_error(cfg, message):
    with pytest.raises(TicketlabError, match=message):
        check_config(cfg)


def test_both_are_registered_searchers_with_their_own_options():
    assert get_searcher("edgepopup") is EdgePopup and get_searcher("supermask") is Supermask
    assert EdgePopup.options == Supermask.options == ("score_lr",)
    assert not EdgePopup.starts_from_mask
    assert replace(SearchConfig(), method="edgepopup").score_lr is None
