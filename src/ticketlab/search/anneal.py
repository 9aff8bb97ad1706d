"""Simulated annealing over masks at fixed sparsity: the thesis's algorithm (EEE 198) and an improved default.

Both walk from a start mask by swap moves (search.moves), evaluating one candidate per step
and accepting it by the Metropolis rule, until the budget of evaluations is spent.

- thesis mode: the published constants (per granularity, filter = the CNN runs, weight = the
  MLP runs); a candidate is compared with the running mean of the scores accepted at this
  temperature (seeded with the previous temperature's mean); the temperature, the number of
  iterations per temperature and h change once per temperature. The thesis kept as best the
  current mask at the end of the temperature whose running mean was highest: that rule is
  kept (`best_mean`). Fixed bugs: the running mean started from an arbitrary 5% (it starts
  from the start mask's score: one evaluation), and h started at the number of kept units,
  which the moves could not honour below 50% sparsity (it starts at the largest feasible h).
- default mode: a candidate is compared with the current mask's own score; T0 is calibrated
  so that a move as bad as the average score change of a few random moves from the start is
  accepted with probability 1/10 (1/2 ran hotter and found worse masks on digits); the
  temperature cools every step, geometrically down to T0 / 1000 at the end of the budget;
  h shrinks to 1 halfway, leaving the rest of the budget to single swaps. Restarts split
  the budget into equal segments, each starting again from the best mask so far with both
  schedules reset (and fitted to the segment's length).
- neighbourhood "adaptive" (either mode; the default one in default mode): no schedule for h;
  after each move h grows if the move improved on the current mask and shrinks if not, so that
  about a fifth of the moves improve (Rechenberg's 1/5 success rule). From a random start h
  begins at its largest; from a start mask of the search's choosing (a criterion's, a run's) at 1.

Default mode starts from magnitude-sign's mask of the trained weights (`defaults`): from a
random mask 5,000 evaluations end far below it (RESULTS.md); from it, annealing climbs
above it on the objective and on held-out images. Thesis mode starts from a random mask.

Every mode also tracks the best single mask evaluated (`best`). A search is a pure function
of its inputs and the generator, and its state can be saved and resumed exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search.base import (CHECKPOINT_EVERY, Checkpoint, Evaluator, Searcher, SearchResult, SearchState,
                                   check_common, history_row)
from ticketlab.search.moves import Move, Moves, Tabu, next_h

CALIBRATION_MOVES = 20
INITIAL_ACCEPTANCE = 0.1  # default mode: the probability of accepting an average worsening move at T0
FINAL_TEMPERATURE = 1e-3  # default mode: a segment's last temperature, as a fraction of T0
H_FALLS_TO_ONE_AT = 0.5  # default mode: the fraction of a segment by which h has shrunk to 1
# The adaptive neighbourhood (Rechenberg's 1/5 success rule): h grows while more than a fifth of
# the moves improve on the current mask and shrinks while fewer do, by e^(RATE * (success - 1/5)).
SUCCESS_TARGET, ADAPT_RATE = 0.2, 0.1


@dataclass(frozen=True)
class Plan:
    """How a search anneals; fields left None are fitted to the budget or calibrated."""

    acceptance: str  # "mean" of the accepted scores (thesis) or the "current" mask's score
    t0: float | None
    cooling: float | None  # temperature factor per temperature step
    h_decay: float | None  # factor of h per temperature step
    sawtooth: bool = True
    adaptive: bool = False  # h follows the success rate of the moves instead of a schedule
    iters: float = 1.0  # evaluations at the first temperature ...
    iters_growth: float = 1.0  # ... times this at each next temperature ...
    iters_cap: float = 1.0  # ... up to this
    tabu: int = 60
    tries: int = 30  # draws to find a candidate the tabu memory has not seen
    radius: str = "exact"  # tabu: "exact" masks, or "hamming": within distance h
    restarts: int = 0


THESIS = {
    "filter": Plan("mean", t0=0.005, cooling=0.995, h_decay=0.99, iters=2.0, iters_growth=1.005, iters_cap=10.0,
                   tabu=60, tries=30, radius="exact"),
    "weight": Plan("mean", t0=0.006, cooling=0.999, h_decay=0.99, iters=1.0, iters_growth=1.005, iters_cap=50.0,
                   tabu=50, tries=50, radius="hamming"),
}
DEFAULT = Plan("current", t0=None, cooling=None, h_decay=None)

NEIGHBOURHOODS = ("sawtooth", "geometric", "adaptive")


# Default mode's start: magnitude-sign's mask of the trained weights, per search granularity.
DEFAULT_START = {"weight": "magnitude_sign@final", "filter": "magnitude_sign_units@final"}


def plan_for(cfg: SearchConfig) -> Plan:
    """The annealing plan of a resolved config (search.searchers.resolve): its mode's constants,
    with the config's own choices over them."""
    base = THESIS[cfg.granularity] if cfg.mode == "thesis" else DEFAULT
    return replace(base, t0=base.t0 if cfg.t0 is None else cfg.t0,
                   cooling=base.cooling if cfg.cooling is None else cfg.cooling,
                   tabu=base.tabu if cfg.tabu is None else cfg.tabu,
                   sawtooth=cfg.neighbourhood == "sawtooth", adaptive=cfg.neighbourhood == "adaptive",
                   restarts=cfg.restarts)


def accept(delta: float, temperature: float, generator: torch.Generator) -> bool:
    """The Metropolis rule, delta = reference score - candidate score: accept a candidate no
    worse than the reference; a worse one with probability exp(-delta / T), drawing one
    uniform number from `generator` (only then); at T = 0, never."""
    if delta <= 0:
        return True
    if temperature <= 0:
        return False
    return float(torch.rand((), generator=generator)) < math.exp(-delta / temperature)


class Annealer(Searcher):
    """Simulated annealing (and, at zero temperature, greedy hill climbing) by swap moves."""

    name = "anneal"
    label = "anneal"
    options = ("neighbourhood", "t0", "cooling", "restarts", "tabu")

    def __init__(self, evaluator: Evaluator, plan: Plan, cfg: SearchConfig, generator: torch.Generator):
        super().__init__(evaluator, cfg.budget, generator)
        self.plan = plan
        # An adaptive neighbourhood starts from single swaps when the search starts from a mask of
        # its own choosing (a criterion's, a run's): big moves from a good mask are all rejected.
        self.small_first = plan.adaptive and cfg.start != "random"
        self.moves = Moves.from_space(evaluator.space, cfg.layer_min)
        self.tabu = Tabu(plan.tabu, plan.radius)
        # Default mode spends a few evaluations on calibrating T0, then splits the rest into
        # equal segments, one per restart; the schedules are fitted to a segment's length.
        probes = min(CALIBRATION_MOVES, (self.budget - 1) // 10) if plan.t0 is None else 0
        self.first = 1 + probes
        segments = plan.restarts + 1
        self.segment = max(1, (self.budget - self.first) // segments)
        self.restarts = {self.first + i * self.segment for i in range(1, segments)}

    @classmethod
    def defaults(cls, cfg: SearchConfig) -> dict[str, Any]:
        if cfg.mode == "thesis":
            return {"start": "random", "neighbourhood": "sawtooth"}
        return {"start": DEFAULT_START[cfg.granularity], "neighbourhood": "adaptive"}

    @classmethod
    def check(cls, cfg: SearchConfig) -> None:
        if cfg.neighbourhood is not None and cfg.neighbourhood not in NEIGHBOURHOODS:
            raise TicketlabError(f"unknown neighbourhood {cfg.neighbourhood!r}; expected one of "
                                 f"{', '.join(NEIGHBOURHOODS)}")
        if cfg.t0 is not None and cfg.t0 < 0:
            raise TicketlabError(f"the initial temperature t0 must be at least 0, got {cfg.t0}")
        if cfg.cooling is not None and not 0 < cfg.cooling <= 1:
            raise TicketlabError(f"cooling must be in (0, 1], got {cfg.cooling}")
        for name in ("restarts", "tabu"):
            if (getattr(cfg, name) or 0) < 0:
                raise TicketlabError(f"{name} must be at least 0, got {getattr(cfg, name)}")
        if cfg.restarts and cfg.mode == "thesis":
            raise TicketlabError("restarts are not part of the thesis's algorithm; use them with --mode default")

    @classmethod
    def build(cls, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator,
              features: torch.Tensor | None) -> Searcher:
        return cls(evaluator, plan_for(cfg), cfg, generator)

    def begin(self, start: torch.Tensor | None) -> SearchState:
        start = start.to("cpu", torch.bool).clone()
        self.moves.check(start, "the start mask")
        self.fit(start)
        score = self.evaluate(start)
        state = SearchState(1, start, score, start, score, h=self.h0, peak=self.h0, iters=self.plan.iters)
        if self.plan.acceptance == "mean":
            state.accepted, state.best_mean, state.best_mean_score = [score], start, score
        state.history.append(history_row(state, score, True, current=score, mean=self.mean(state)))
        self.tabu.add(start)
        state.t0 = self.plan.t0 if self.plan.t0 is not None else self.calibrate(state)
        state.temperature = state.t0
        return state

    def resume(self, state: SearchState) -> None:
        self.fit(state.current)
        self.tabu = Tabu(self.plan.tabu, self.plan.radius, state.tabu)

    def snapshot(self, state: SearchState) -> dict[str, Any]:
        state.tabu = list(self.tabu.memory)
        return super().snapshot(state)

    def fit(self, keep: torch.Tensor) -> None:
        """The largest move, the first one (h0), and the schedules' factors where the plan leaves them
        to the budget."""
        self.h_max = self.moves.max_h(keep)
        self.h0 = 1 if self.small_first else self.h_max
        self.cooling = self.plan.cooling or FINAL_TEMPERATURE ** (1 / self.segment)
        self.h_decay = self.plan.h_decay or fitted_h_decay(self.h0, H_FALLS_TO_ONE_AT * self.segment,
                                                           self.plan.sawtooth)

    def calibrate(self, state: SearchState) -> float:
        """T0 at which a move as bad as the average score change of random moves from the start
        is accepted with probability INITIAL_ACCEPTANCE (0, i.e. greedy, if they all scored the same)."""
        drawn = [self.draw(state.current, self.h0) for _ in range(self.first - 1)]
        if not drawn:
            return 0.0
        probes = [keep for keep, _ in drawn]
        for keep in probes:
            self.tabu.add(keep)
        scores = [float(s) for s in self.evaluator.score_many(probes, [move for _, move in drawn])]
        for keep, score in zip(probes, scores):
            state.step += 1
            if score > state.best_score:
                state.best, state.best_score = keep, score
            state.history.append(history_row(state, score, False, h=self.h0, current=state.current_score,
                                             mean=self.mean(state)))
        spread = sum(abs(s - state.current_score) for s in scores) / len(scores)
        return spread / math.log(1 / INITIAL_ACCEPTANCE)

    def mean(self, state: SearchState) -> float | None:
        return sum(state.accepted) / len(state.accepted) if self.plan.acceptance == "mean" else None

    def h(self, state: SearchState) -> int:
        """The units the next move swaps (an adaptive neighbourhood keeps h as a real number)."""
        return max(1, min(self.h_max, round(state.h)))

    def draw(self, keep: torch.Tensor, h: int) -> tuple[torch.Tensor, Move]:
        """A random neighbour of `keep` at move size h, and the Move to it: h kept and h pruned
        units swapped (a searcher over another neighbourhood overrides this alone)."""
        return self.moves.move(keep, h, self.generator)

    def propose(self, state: SearchState) -> tuple[torch.Tensor, Move]:
        h = self.h(state)
        for _ in range(max(1, self.plan.tries)):
            candidate, move = self.draw(state.current, h)
            if not self.tabu.seen(candidate, h):
                break
        self.tabu.add(candidate)  # the thesis's rule: after `tries` seen draws, the last one is evaluated anyway
        return candidate, move

    def iterate(self, state: SearchState) -> None:
        if state.step in self.restarts:
            self.restart(state)
        candidate, move = self.propose(state)
        score = self.evaluate(candidate, move)
        state.step += 1
        reference = self.mean(state) if self.plan.acceptance == "mean" else state.current_score
        accepted = accept(reference - score, state.temperature, self.generator)
        h, improved = self.h(state), score > state.current_score
        if accepted:
            state.current, state.current_score = candidate, score
            if self.plan.acceptance == "mean":
                state.accepted.append(score)
        if score > state.best_score:
            state.best, state.best_score = candidate, score
        state.history.append(history_row(state, score, accepted, state.temperature, h, self.mean(state),
                                         state.current_score))
        if self.plan.adaptive:
            grown = state.h * math.exp(ADAPT_RATE * (float(improved) - SUCCESS_TARGET))
            state.h = min(float(self.h_max), max(1.0, grown))
        state.iters_done += 1
        if state.iters_done >= int(state.iters):
            self.next_temperature(state)

    def next_temperature(self, state: SearchState) -> None:
        mean = self.mean(state)
        if mean is not None:
            if mean > state.best_mean_score:
                state.best_mean, state.best_mean_score = state.current, mean
            state.accepted = [mean]
        if not self.plan.adaptive:
            state.h, state.peak = next_h(state.h, state.peak, self.h_decay, self.plan.sawtooth)
        state.temperature *= self.cooling
        state.iters = min(self.plan.iters_cap, state.iters * self.plan.iters_growth)
        state.iters_done = 0

    def restart(self, state: SearchState) -> None:
        """Go on from the best mask so far with the temperature and the neighbourhood reset."""
        state.current, state.current_score = state.best, state.best_score
        state.temperature, state.h, state.peak = state.t0, self.h0, self.h0
        state.iters, state.iters_done = self.plan.iters, 0
        state.accepted = [state.best_score] if self.plan.acceptance == "mean" else []


def fitted_h_decay(h0: int, steps: float, sawtooth: bool) -> float:
    """The factor per step that takes h from h0 down to about 1 in `steps` steps.

    A sawtooth's peaks fall by 3/4 per tooth and each tooth takes ln 2 / -ln(decay) steps
    (from its peak down to half of it), so it needs ln(h0) / ln(4/3) teeth.
    """
    if h0 <= 1:
        return 1.0
    rate = math.log(2) * math.log(h0) / math.log(4 / 3) if sawtooth else math.log(h0)
    return math.exp(-rate / max(steps, 1.0))


def anneal(evaluator: Evaluator, start: torch.Tensor, cfg: SearchConfig, generator: torch.Generator, *,
           progress: bool = True, resume: dict[str, Any] | None = None, checkpoint: Checkpoint | None = None,
           checkpoint_every: int = CHECKPOINT_EVERY) -> SearchResult:
    """Simulated annealing from `start` (a flat keep-vector of evaluator.space) for cfg.budget evaluations.

    cfg.mode picks the thesis's algorithm or the default (see the module's docstring); the
    config's t0, cooling, tabu, neighbourhood, layer_min and restarts override the mode's own.
    cfg.start only says where `start` came from: an adaptive neighbourhood begins with single
    swaps unless it is "random" (unset, it is the mode's default start).
    `checkpoint` receives the search's state every `checkpoint_every` evaluations; passing a
    saved state as `resume` goes on from it exactly as if the search had not stopped.
    """
    check_common(cfg)
    Annealer.check(cfg)
    cfg = Annealer.resolved(cfg)
    return Annealer(evaluator, plan_for(cfg), cfg, generator).run(
        start, progress=progress, resume=resume, checkpoint=checkpoint, checkpoint_every=checkpoint_every)
