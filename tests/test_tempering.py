"""Parallel tempering (search.tempering): turns, exchanges, budget, reproducibility, resumption."""

import math
from dataclasses import replace

import pytest
import torch

from test_anneal import SPACE, TARGET, Overlap, Scripted, start_mask, toy_space
from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search.baselines import random_search
from ticketlab.search.searchers import check_config, resolve
from ticketlab.search.tempering import TURN, Tempering

CFG = SearchConfig(method="tempering", granularity="filter", start="magnitude")


def temper(cfg, evaluator=None, seed=0, **kwargs):
    cfg = resolve(replace(CFG, **cfg) if isinstance(cfg, dict) else cfg)
    check_config(cfg)
    evaluator = evaluator or Overlap(SPACE, TARGET)
    generator = torch.Generator().manual_seed(seed)
    searcher = Tempering.build(evaluator, cfg, generator, None)
    return searcher.run(start_mask(seed, evaluator.space), progress=False, **kwargs)


@pytest.mark.parametrize("budget", [1, 2, 22, 60, 250])
def test_the_budget_is_spent_exactly(budget):
    evaluator = Overlap(SPACE, TARGET)
    result = temper({"budget": budget}, evaluator)
    assert evaluator.evaluations == result.evaluations == len(result.history) == budget
    assert [row["step"] for row in result.history] == list(range(1, budget + 1))
    assert result.best_score == max(row["candidate"] for row in result.history)


def test_replicas_take_turns_down_a_fixed_ladder_of_temperatures():
    budget = 1 + 20 + 3 * 4 * (TURN + 1)  # the start, 20 calibration moves, three rounds of four turns
    result = temper({"budget": budget, "replicas": 4})
    turns = result.history[21:]
    ladder = [result.t0 * 1e-3 ** (r / 3) for r in range(4)]
    for turn in range(12):
        rows = turns[turn * (TURN + 1):(turn + 1) * (TURN + 1)]
        assert [row["temperature"] for row in rows] == pytest.approx([ladder[turn % 4]] * (TURN + 1))
        first = rows[0]  # a turn begins by scoring its replica's mask again
        assert first["accepted"] and first["candidate"] == first["current"]
    assert result.t0 > 0


def test_exchanges_move_better_masks_to_colder_temperatures():
    searcher = Tempering.build(Overlap(SPACE, TARGET), resolve(replace(CFG, replicas=4)), torch.Generator(), None)
    masks = [torch.full((3,), i, dtype=torch.bool) for i in range(4)]
    population = [(masks[0], 0.9, 1.0), (masks[1], 0.1, 1.0), (masks[2], 0.5, 1.0), (masks[3], 0.6, 1.0)]
    generator_state = searcher.generator.get_state()
    # Even pairs: (0, 1), whose hotter member is better, swap without a draw; (2, 3) whose colder one is better
    # swap with probability exp((1/T2 - 1/T3) * (0.6 - 0.5)): at these temperatures about e^-90, so never.
    exchanged = searcher.exchange(list(population), [1.0, 0.1, 0.01, 0.001], 0)
    assert [score for _, score, _ in exchanged] == [0.1, 0.9, 0.5, 0.6]
    assert not torch.equal(searcher.generator.get_state(), generator_state)  # one draw, for the pair (2, 3)
    # Odd pairs: only (1, 2); near-equal temperatures make a worse swap likely.
    odd = searcher.exchange(list(population), [1.0, 1.0, 0.999999, 0.1], 1)
    assert [score for _, score, _ in odd] == [0.9, 0.5, 0.1, 0.6]
    assert math.exp((1 / 1.0 - 1 / 0.999999) * (0.1 - 0.5)) > 0.99
    # A greedy ladder (T0 = 0) takes a better mask down outright and nothing else.
    greedy = searcher.exchange(list(population), [0.0] * 4, 0)
    assert [score for _, score, _ in greedy] == [0.1, 0.9, 0.5, 0.6]


def test_a_seeded_search_is_reproducible_and_resumes_exactly_from_a_saved_state():
    cfg = {"budget": 400, "replicas": 3}
    saved = []
    whole = temper(cfg, seed=5, checkpoint=saved.append, checkpoint_every=37)
    again = temper(cfg, seed=5)
    assert again.history == whole.history and torch.equal(again.best, whole.best)
    # States mid-turn, at a turn's end and past an exchange all go on exactly as the whole run did.
    for state in saved[1::3]:
        resumed = temper(cfg, seed=99, resume=state)  # the seed is overridden by the saved stream
        assert resumed.history == whole.history and torch.equal(resumed.best, whole.best)
    assert any(row["accepted"] and row["candidate"] < row["best"] for row in whole.history)


def test_it_finds_the_toy_problems_best_mask_where_random_search_does_not():
    space = toy_space(40, 40, 40)
    target = space.random(0.8, torch.Generator().manual_seed(3))
    found = temper({"budget": 5000}, Overlap(space, target))
    drawn = random_search(Overlap(space, target), replace(CFG, method="random", budget=5000),
                          torch.Generator().manual_seed(0), progress=False)
    assert found.best_score == 1.0 > drawn.best_score


def test_ties_and_plateaus_at_zero_temperature_are_crossed():
    # Every score equal: T0 calibrates to 0, every replica is greedy and takes ties.
    result = temper({"budget": 80}, Scripted(SPACE, [0.5] * 80))
    assert result.t0 == 0 and all(row["accepted"] for row in result.history[21:])


@pytest.mark.parametrize("cfg, message", [
    (replace(CFG, replicas=1), "replicas must be at least 2"),
    (replace(CFG, method="anneal", replicas=0), "replicas must be at least 2"),  # refused even where unused
    (replace(CFG, mode="thesis"), "parallel tempering is not the thesis's algorithm"),
    (replace(CFG, neighbourhood="sawtooth"), "neighbourhood 'sawtooth' is annealing's"),
    (replace(CFG, cooling=0.9), "cooling, restarts and tabu are annealing's options"),
    (replace(CFG, tabu=10), "cooling, restarts and tabu are annealing's options"),
])
def test_bad_settings_are_one_clear_error(cfg, message):
    with pytest.raises(TicketlabError, match=message):
        check_config(cfg)
