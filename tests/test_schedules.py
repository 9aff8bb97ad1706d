"""Schedules: n rounds, each pruning 1-(1-s)^(1/n) of what remains, reach s exactly."""

from __future__ import annotations

import pytest
import torch

from ticketlab.config import TicketlabError
from ticketlab.sparsity.schedules import cumulative_sparsities, round_rate
from ticketlab.sparsity.selection import select


def test_round_rate():
    assert round_rate(0.8, 4) == pytest.approx(0.33126, abs=1e-5)
    assert round_rate(0.5, 1) == 0.5
    assert round_rate(0.0, 7) == 0.0
    assert round_rate(1 - 0.8**5, 5) == pytest.approx(0.2)  # the lottery ticket's 20% per round


@pytest.mark.parametrize("sparsity,rounds", [(0.8, 4), (0.9, 1), (0.99, 7), (0.5, 100), (0.0, 3)])
def test_rounds_of_round_rate_reach_the_target(sparsity, rounds):
    rate = round_rate(sparsity, rounds)
    remaining = 1.0
    for _ in range(rounds):
        remaining *= 1 - rate
    assert remaining == pytest.approx(1 - sparsity)

    targets = cumulative_sparsities(sparsity, rounds)
    assert len(targets) == rounds and targets[-1] == sparsity
    assert targets == sorted(targets)
    assert targets == pytest.approx([1 - (1 - rate) ** k for k in range(1, rounds + 1)])


def test_one_shot_is_one_round():
    assert cumulative_sparsities(0.8, 1) == [0.8]


def test_start_from_a_reached_sparsity():
    assert cumulative_sparsities(0.8, 2, start=0.5) == pytest.approx([1 - 0.5 * 0.4**0.5, 0.8])
    assert cumulative_sparsities(0.8, 3, start=0.8) == pytest.approx([0.8, 0.8, 0.8])


def test_selecting_round_by_round_prunes_the_rate_of_what_remains():
    scores = {"w": torch.rand(1000, generator=torch.Generator().manual_seed(0))}
    keep, rate = None, round_rate(0.8, 4)
    for target in cumulative_sparsities(0.8, 4):
        before = 1000 if keep is None else int(keep["w"].sum())
        keep = select(scores, target, current=keep)
        assert before - int(keep["w"].sum()) == pytest.approx(rate * before, abs=1)
    assert int(keep["w"].sum()) == 1000 - round(1000 * 0.8)


@pytest.mark.parametrize("call,match", [
    (lambda: round_rate(1.0, 4), r"sparsity 1.0 is outside \[0, 1\)"),
    (lambda: round_rate(-0.1, 4), "outside"),
    (lambda: round_rate(0.5, 0), "rounds 0"),
    (lambda: cumulative_sparsities(0.5, 2.5), "rounds 2.5"),
    (lambda: cumulative_sparsities(0.5, True), "rounds True"),
    (lambda: cumulative_sparsities(0.5, 2, start=0.6), "past the target"),
])
def test_bad_input(call, match):
    with pytest.raises(TicketlabError, match=match) as error:
        call()
    assert "\n" not in str(error.value)
