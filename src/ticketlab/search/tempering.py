"""Parallel tempering (replica-exchange annealing) over masks at fixed sparsity.

`replicas` walks of annealing's swap moves run at fixed temperatures, a geometric ladder
from T0 (calibrated as default-mode annealing calibrates it) down to T0 * FINAL_TEMPERATURE,
each with its own adaptive neighbourhood, all from the same start. They take turns of TURN
evaluations, so that the evaluator (which keeps the last two masks it scored) always moves
from the walking replica's own current mask: a turn begins by scoring that mask again (one
evaluation of the budget). After every round of turns, neighbouring temperatures offer to
exchange their masks, by the replica-exchange rule: accepted with probability
min(1, exp((1/T_hot - 1/T_cold) * (score_cold - score_hot))), so that a better mask found
hot always moves down the ladder (the even pairs after one round, the odd pairs after the
next). The result is the best mask any replica evaluated.

The search state is annealing's, for the walking replica, plus `population`, every
temperature's (mask, score, h) as it was when its last turn ended, and `turns`, how many
turns have begun (the walking replica is the one at temperature (turns - 1) mod replicas).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search.anneal import FINAL_TEMPERATURE, Annealer, accept, plan_for
from ticketlab.search.base import Evaluator, Searcher, SearchState, history_row

TURN = 50  # evaluations a replica walks before the next one takes over


class Tempering(Annealer):
    """Replicas of annealing at fixed temperatures that exchange masks (see the module doc)."""

    name = "tempering"
    label = "tempering"
    options = ("t0", "replicas")  # t0: the hottest temperature

    def __init__(self, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator):
        plan = replace(plan_for(replace(cfg, mode="default")), tabu=0, tries=1, restarts=0)
        super().__init__(evaluator, plan, cfg, generator)
        self.replicas = cfg.replicas

    @classmethod
    def defaults(cls, cfg: SearchConfig) -> dict[str, Any]:
        return {**Annealer.defaults(replace(cfg, mode="default")), "neighbourhood": "adaptive"}

    @classmethod
    def check(cls, cfg: SearchConfig) -> None:
        if cfg.replicas < 2:
            raise TicketlabError(f"replicas must be at least 2 (one is annealing at a fixed temperature), "
                                 f"got {cfg.replicas}")
        if cfg.method != cls.name:
            return
        if cfg.mode == "thesis":
            raise TicketlabError("parallel tempering is not the thesis's algorithm; use it with --mode default")
        if cfg.neighbourhood not in (None, "adaptive"):
            raise TicketlabError(f"tempering's replicas adapt their own move sizes; neighbourhood "
                                 f"{cfg.neighbourhood!r} is annealing's (leave it unset)")
        if cfg.cooling is not None or cfg.restarts or cfg.tabu:
            raise TicketlabError("tempering's temperatures are fixed and it keeps no tabu memory: cooling, "
                                 "restarts and tabu are annealing's options")

    @classmethod
    def build(cls, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator,
              features: torch.Tensor | None) -> Searcher:
        return cls(evaluator, cfg, generator)

    def ladder(self, t0: float) -> list[float]:
        """The temperatures, hottest first."""
        return [t0 * FINAL_TEMPERATURE ** (r / (self.replicas - 1)) for r in range(self.replicas)]

    def begin(self, start: torch.Tensor | None) -> SearchState:
        state = super().begin(start)  # scores the start and calibrates T0
        state.population = [(state.current, state.current_score, state.h)] * self.replicas
        if state.step < self.budget:
            self.start_turn(state)
        return state

    def iterate(self, state: SearchState) -> None:
        if state.iters_done >= TURN:
            self.end_turn(state)
            self.start_turn(state)
            return
        candidate, move = self.propose(state)
        score = self.evaluate(candidate, move)
        state.step += 1
        accepted = accept(state.current_score - score, state.temperature, self.generator)
        h, improved = self.h(state), score > state.current_score
        if accepted:
            state.current, state.current_score = candidate, score
        if score > state.best_score:
            state.best, state.best_score = candidate, score
        state.history.append(history_row(state, score, accepted, state.temperature, h, current=state.current_score))
        self.adapt(state, improved)
        state.iters_done += 1

    def start_turn(self, state: SearchState) -> None:
        """The next replica walks: it scores its current mask again (one evaluation), so that its
        moves start from a mask the evaluator holds."""
        active = state.turns % self.replicas
        state.current, _, state.h = state.population[active]
        state.current_score = self.evaluate(state.current)
        state.temperature = self.ladder(state.t0)[active]
        state.step += 1
        state.turns += 1
        state.iters_done = 0
        state.history.append(history_row(state, state.current_score, True, state.temperature, self.h(state),
                                         current=state.current_score))

    def end_turn(self, state: SearchState) -> None:
        """The walking replica's mask goes back to its temperature; after a round of turns,
        neighbouring temperatures offer to exchange."""
        population = list(state.population)  # a new list: a saved state holds the old one
        population[(state.turns - 1) % self.replicas] = (state.current, state.current_score, state.h)
        if state.turns % self.replicas == 0:
            population = self.exchange(population, self.ladder(state.t0), state.turns // self.replicas % 2)
        state.population = population

    def exchange(self, population: list[tuple[torch.Tensor, float, float]], temperatures: list[float],
                 offset: int) -> list[tuple[torch.Tensor, float, float]]:
        """Neighbouring temperatures (r, r + 1), r = offset, offset + 2, ..., swap masks by the
        replica-exchange rule (one uniform draw for each pair it does not accept outright)."""
        for r in range(offset, self.replicas - 1, 2):
            hot, cold = population[r][1], population[r + 1][1]
            if temperatures[r + 1] <= 0:  # a greedy ladder (T0 = 0): a better mask goes down outright
                swap = hot > cold
            else:
                exponent = (1 / temperatures[r] - 1 / temperatures[r + 1]) * (cold - hot)
                swap = exponent >= 0 or float(torch.rand((), generator=self.generator)) < math.exp(exponent)
            if swap:
                population[r], population[r + 1] = population[r + 1], population[r]
        return population
