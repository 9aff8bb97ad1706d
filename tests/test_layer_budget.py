import pytest
import torch

from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search.base import UnitData
from ticketlab.search.layers import LayerBudget
from ticketlab.search.searchers import resolve

from test_anneal import Overlap, toy_space

SPACE = toy_space(40, 30, 20)
SCORES = torch.rand(SPACE.size, generator=torch.Generator().manual_seed(3))


def ranked(budgets):
    """The keep-vector keeping the `budgets` best-scored units of each layer."""
    keep = torch.zeros(SPACE.size, dtype=torch.bool)
    for layer, budget in zip(SPACE.layers, budgets):
        keep[layer.slice.start + SCORES[layer.slice].argsort(descending=True)[:budget]] = True
    return keep


class Recording(Overlap):
    """Overlap with a target, remembering every candidate and the Move it came with."""

    def __init__(self, space, target):
        super().__init__(space, target)
        self.seen = []

    def score(self, keep, move=None):
        self.seen.append((keep, move))
        return super().score(keep)


def searcher(evaluator, seed=0, **settings):
    cfg = resolve(SearchConfig(method="layer-budget", granularity="filter", sparsity=0.6, **settings))
    return LayerBudget.build(evaluator, cfg, torch.Generator().manual_seed(seed), UnitData(scores=SCORES))


def test_every_candidate_keeps_each_layers_best_ranked_units_and_the_best_budgets_are_found():
    target = ranked([6, 20, 10])  # 36 kept, as sparsity 0.6 of 90 units keeps
    evaluator = Recording(SPACE, target)
    found = searcher(evaluator, budget=300).run(ranked([20, 10, 6]), progress=False)
    assert found.best_score == 1.0 and torch.equal(found.best, target)
    for keep, move in evaluator.seen:
        budgets = [int(keep[layer.slice].sum()) for layer in SPACE.layers]
        assert torch.equal(keep, ranked(budgets)) and sum(budgets) == 36 and min(budgets) >= 1
        if move is not None:  # the hint is exact: the candidate is its base with the flipped units flipped
            flipped = move.base.clone()
            flipped[move.flipped] ^= True
            assert torch.equal(flipped, keep) and len(move.flipped.unique()) == len(move.flipped)


def test_a_start_that_is_not_ranked_is_replaced_by_the_ranked_mask_of_its_budgets():
    start = SPACE.random(0.6, torch.Generator().manual_seed(1))
    evaluator = Recording(SPACE, ranked([12, 12, 12]))
    searcher(evaluator, budget=5).run(start, progress=False)
    first = evaluator.seen[0][0]
    assert torch.equal(first, ranked([int(start[layer.slice].sum()) for layer in SPACE.layers]))


def test_it_is_reproducible_by_seed_and_resumes_exactly_after_a_kill():
    target = ranked([6, 20, 10])
    whole = searcher(Overlap(SPACE, target), seed=2, budget=120).run(ranked([20, 10, 6]), progress=False)
    saved = []
    killed = searcher(Overlap(SPACE, target), seed=2, budget=120)
    with pytest.raises(KeyboardInterrupt):
        def checkpoint(snapshot):
            saved.append(snapshot)
            if snapshot["step"] >= 60:
                raise KeyboardInterrupt
        killed.run(ranked([20, 10, 6]), progress=False, checkpoint=checkpoint, checkpoint_every=20)
    resumed = searcher(Overlap(SPACE, target), seed=2, budget=120).run(None, progress=False, resume=saved[-1])
    assert resumed.history == whole.history and torch.equal(resumed.best, whole.best)
    again = searcher(Overlap(SPACE, target), seed=2, budget=120).run(ranked([20, 10, 6]), progress=False)
    assert again.history == whole.history


def test_it_needs_a_criterion_to_rank_by_and_two_layers():
    assert resolve(SearchConfig(method="layer-budget", mode="thesis")).start == "magnitude_sign@final"
    cfg = resolve(SearchConfig(method="layer-budget", granularity="filter"))
    with pytest.raises(TicketlabError, match="needs the start criterion's scores"):
        LayerBudget.build(Overlap(SPACE, None), cfg, torch.Generator(), UnitData())
    one = toy_space(50)
    with pytest.raises(TicketlabError, match="at least two layers"):
        LayerBudget.build(Overlap(one, None), cfg, torch.Generator(), UnitData(scores=torch.rand(50)))
