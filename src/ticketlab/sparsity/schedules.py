"""Pruning schedules: one-shot, or n rounds that each prune the same fraction of what remains.

n rounds pruning 1 - (1 - s)^(1/n) of the remaining weights each leave (1 - s) of them, so
the target s is reached; each round's target is cumulative (the fraction pruned so far).
"""

from __future__ import annotations

from ticketlab.config import TicketlabError


def check_sparsity(sparsity: float, what: str = "sparsity") -> None:
    if not 0 <= sparsity < 1:  # NaN fails too
        raise TicketlabError(f"{what} {sparsity!r} is outside [0, 1); expected the fraction to prune, e.g. 0.8")


def check_rounds(rounds: int) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise TicketlabError(f"rounds {rounds!r} is not a whole number of at least 1")


def round_rate(sparsity: float, rounds: int) -> float:
    """The fraction of the remaining weights each of `rounds` rounds prunes to reach `sparsity`."""
    check_sparsity(sparsity)
    check_rounds(rounds)
    return 1 - (1 - sparsity) ** (1 / rounds)


def cumulative_sparsities(sparsity: float, rounds: int, *, start: float = 0.0) -> list[float]:
    """The target sparsity after each round, the last exactly `sparsity` (one round: one-shot).

    start: the sparsity already reached; the rounds prune the same fraction of what remains.
    """
    check_sparsity(sparsity)
    check_rounds(rounds)
    check_sparsity(start, "start sparsity")
    if start > sparsity:
        raise TicketlabError(f"start sparsity {start!r} is past the target {sparsity!r}; expected at most the target")
    left = (1 - sparsity) / (1 - start)
    return [1 - (1 - start) * left ** (k / rounds) for k in range(1, rounds)] + [sparsity]
