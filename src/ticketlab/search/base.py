"""What every mask searcher is: a loop that spends a budget of evaluations, one state that saves
and resumes exactly, and the checks of the options that all searchers share.

A searcher (anneal.py, baselines.py, reinforce.py, gradient.py) subclasses Searcher: it names itself, says
whether it starts from a mask, checks its own options in `check`, and implements `begin` and
`iterate`. search/searchers.py lists them by name (SEARCHERS), as sparsity/criteria lists the
criteria; nothing else needs to know a searcher exists.

An Evaluator is anything with a search space, a count of evaluations and `score` / `score_many`
of flat keep-vectors (search/evaluators). A searcher that moves from a mask it scored passes
the search.moves.Move as a hint: which units it flipped, so that no evaluator has to find them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search.moves import Move
from ticketlab.search.reference import METRICS
from ticketlab.search.space import SearchSpace
from ticketlab.sparsity.selection import SCOPES
from ticketlab.training.progress import Progress

Checkpoint = Callable[[dict[str, Any]], None]
Observer = Callable[["SearchState"], None]  # sees the state after every step; may add to its last history row
CHECKPOINT_EVERY = 200  # evaluations between saved states
# The options whose default is the searcher's (Searcher.defaults), and the value each had as
# the one default before: run names are taken against these, so a run asked for with them
# (--start random --neighbourhood sawtooth) keeps the name it had when they were the defaults.
NAMED_AGAINST: dict[str, Any] = {"start": "random", "neighbourhood": "sawtooth"}
MODES = ("default", "thesis")
GRANULARITIES = ("weight", "filter")


class Evaluator(Protocol):
    """Scores masks (flat keep-vectors of `space`): higher is better."""

    space: SearchSpace
    evaluations: int
    network: tuple[nn.Module, dict[str, torch.Tensor]] | None  # the module and checkpoint scored, where known
    batches: list[tuple[torch.Tensor, torch.Tensor]]  # the objective's images and labels, as they are scored

    def score(self, keep: torch.Tensor, move: Move | None = None) -> float: ...

    def score_many(self, keeps: Sequence[torch.Tensor], moves: Sequence[Move | None] | None = None) -> list[float]: ...


@dataclass
class SearchResult:
    """A finished search: the best mask evaluated (flat keep-vector) and its score, one
    history row per evaluation, and, in thesis mode, the mask the thesis's rule picks."""

    best: torch.Tensor
    best_score: float
    history: list[dict[str, Any]]
    evaluations: int
    best_mean: torch.Tensor | None = None  # thesis rule: the current mask when the running mean peaked
    best_mean_score: float | None = None  # that running mean
    t0: float | None = None


@dataclass
class SearchState:
    """Everything a search needs to go on from where it is (saved as plain data)."""

    step: int  # evaluations spent
    current: torch.Tensor
    current_score: float
    best: torch.Tensor
    best_score: float
    t0: float | None = None
    temperature: float | None = None
    h: int | None = None
    peak: int | None = None
    iters: float = 1.0
    iters_done: int = 0
    accepted: list[float] = field(default_factory=list)  # the running mean's terms at this temperature
    best_mean: torch.Tensor | None = None
    best_mean_score: float | None = None
    tabu: list[Any] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    rng: torch.Tensor | None = None


def history_row(state: SearchState, candidate: float, accepted: bool, temperature: float | None = None,
                h: int | None = None, mean: float | None = None, current: float | None = None) -> dict[str, Any]:
    return {"step": state.step, "temperature": temperature, "h": h, "candidate": candidate,
            "current": current, "mean": mean, "best": state.best_score, "accepted": accepted}


class Searcher:
    """The loop every searcher shares: spend the budget one evaluation at a time, with a
    progress bar, saving the state every `checkpoint_every` evaluations."""

    name: ClassVar[str]  # as `ticketlab search METHOD` and SearchConfig.method name it
    label: ClassVar[str] = "search"  # the progress bar's
    starts_from_mask: ClassVar[bool] = True  # False: it draws its own masks (SearchConfig.start is unused)
    needs_features: ClassVar[bool] = False  # it reads search.features' per-unit features
    options: ClassVar[tuple[str, ...]] = ()  # the SearchConfig fields only it reads (its `check` checks them)

    def __init__(self, evaluator: Evaluator, budget: int, generator: torch.Generator):
        self.evaluator, self.budget, self.generator = evaluator, budget, generator

    @classmethod
    def check(cls, cfg: SearchConfig) -> None:
        """Raise a one-line TicketlabError for a setting this searcher cannot run with. Every
        searcher's check runs on every config (a bad value is refused even where it is unused);
        `cfg.method` says whether this searcher is the one that runs."""

    @classmethod
    def defaults(cls, cfg: SearchConfig) -> dict[str, Any]:
        """Values for the options of cfg that are left unset (None) and whose default depends on the
        searcher (and its mode): `resolved` fills them in before a search runs."""
        return {}

    @classmethod
    def resolved(cls, cfg: SearchConfig) -> SearchConfig:
        """cfg with its unset options set: to this searcher's defaults, or where it does not read
        them, to the values runs are named against (NAMED_AGAINST)."""
        own = cls.defaults(cfg)
        unset = {name: own.get(name, NAMED_AGAINST[name]) for name in NAMED_AGAINST if getattr(cfg, name) is None}
        return dataclasses.replace(cfg, **unset)

    @classmethod
    def build(cls, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator,
              features: torch.Tensor | None) -> Searcher:
        """The searcher a config asks for (the search stage's one way to make any of them), from a
        resolved config (search.searchers.resolve)."""
        raise NotImplementedError

    @classmethod
    def summarise(cls, found: SearchResult) -> dict[str, Any]:
        """What the search stage's summary adds for this searcher (beside what every search reports)."""
        return {}

    def begin(self, start: torch.Tensor | None) -> SearchState:
        raise NotImplementedError

    def resume(self, state: SearchState) -> None:
        """Rebuild what the searcher derives from a saved state."""

    def agent_state(self) -> dict[str, Any] | None:
        """What the searcher learns beside the SearchState fields (a policy, mask scores, their
        optimiser), saved with the state as its "agent"; None: nothing."""
        return None

    def load_agent(self, agent: dict[str, Any]) -> None:
        """Take back what agent_state saved (called before `resume`)."""

    def iterate(self, state: SearchState) -> None:
        raise NotImplementedError

    def next_cost(self, state: SearchState) -> int:
        """What the next `iterate` spends of the budget, in evaluations of the objective's images
        (a searcher that also trains counts its training as the forward passes it costs)."""
        return 1

    def snapshot(self, state: SearchState) -> dict[str, Any]:
        """The state as plain data. Its tensors are never changed in place and history rows never
        after they are written, so copying the lists (not their items) is a snapshot."""
        state.rng = self.generator.get_state()
        values = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
        snapshot = {name: list(value) if isinstance(value, list) else value for name, value in values.items()}
        agent = self.agent_state()
        return snapshot if agent is None else {**snapshot, "agent": agent}

    def evaluate(self, keep: torch.Tensor, move: Move | None = None) -> float:
        return float(self.evaluator.score(keep, move))

    def run(self, start: torch.Tensor | None, *, progress: bool = True, resume: dict[str, Any] | None = None,
            checkpoint: Checkpoint | None = None, checkpoint_every: int = CHECKPOINT_EVERY,
            observe: Observer | None = None) -> SearchResult:
        if resume is not None:
            resume = dict(resume)
            agent = resume.pop("agent", None)
            state = SearchState(**resume)
            self.generator.set_state(state.rng)
            if agent is not None:
                self.load_agent(agent)
            self.resume(state)
        else:
            state = self.begin(start)
            if observe is not None:
                observe(state)
        bar = Progress(self.budget, self.label, progress, initial=state.step, unit="eval")
        try:
            while state.step + self.next_cost(state) <= self.budget:
                before = state.step
                self.iterate(state)
                if observe is not None:
                    observe(state)
                bar.update(state.step - before)
                bar.note(best=state.best_score)
                if checkpoint is not None and state.step // checkpoint_every > before // checkpoint_every \
                        and state.step < self.budget:
                    checkpoint(self.snapshot(state))
        finally:
            bar.close()
        return SearchResult(state.best, state.best_score, state.history, state.step,
                            state.best_mean, state.best_mean_score, state.t0)


class SamplingSearcher(Searcher):
    """A searcher that draws every candidate afresh (`sample`) and keeps the best: random search,
    and a policy that learns where to draw (REINFORCE). `accepted` in the history marks a new best."""

    starts_from_mask = False

    def sample(self) -> torch.Tensor:
        raise NotImplementedError

    def begin(self, start: torch.Tensor | None) -> SearchState:
        keep = self.sample()
        score = self.evaluate(keep)
        state = SearchState(1, keep, score, keep, score)
        state.history.append(history_row(state, score, True, current=score))
        return state

    def iterate(self, state: SearchState) -> None:
        keep = self.sample()
        score = self.evaluate(keep)
        state.step += 1
        state.current, state.current_score = keep, score
        improved = score > state.best_score
        if improved:
            state.best, state.best_score = keep, score
        state.history.append(history_row(state, score, improved, current=score))


def check_common(cfg: SearchConfig) -> None:
    """The options every searcher shares (its own are its `check`'s)."""
    for name, allowed in (("mode", MODES), ("granularity", GRANULARITIES), ("metric", METRICS),
                          ("start_scope", SCOPES)):
        if getattr(cfg, name) not in allowed:
            raise TicketlabError(f"unknown {name} {getattr(cfg, name)!r}; expected one of {', '.join(allowed)}")
    if not 0 < cfg.sparsity < 1:
        raise TicketlabError(f"search sparsity must be in (0, 1), got {cfg.sparsity}")
    if cfg.budget < 1:
        raise TicketlabError(f"the search budget must be at least 1 evaluation, got {cfg.budget}")
    if not 0 <= cfg.layer_min < 1:
        raise TicketlabError(f"layer_min must be in [0, 1), got {cfg.layer_min}")
    if cfg.train_steps < 0:
        raise TicketlabError(f"train_steps must be at least 0, got {cfg.train_steps}")
    if cfg.val_size is not None and cfg.val_size < 1:
        raise TicketlabError(f"val_size must be at least 1 image, got {cfg.val_size}")
