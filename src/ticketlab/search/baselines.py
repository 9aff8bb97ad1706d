"""The baselines annealing is compared with at an equal budget of evaluations of the same evaluator.

- random search: independent random masks at the same sparsity (and layer floors); the best wins.
- greedy: first-improvement hill climbing with annealing's own moves and neighbourhood
  schedule: a candidate is taken when it scores no worse than the current mask (ties are
  taken, so it can cross plateaus), i.e. default-mode annealing at zero temperature.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ticketlab.config import SearchConfig
from ticketlab.search.anneal import (CHECKPOINT_EVERY, Annealer, Checkpoint, SearchResult, SearchState,
                                     Searcher, check_config, history_row, plan_for)


class RandomSearch(Searcher):
    label = "random search"

    def __init__(self, evaluator: Any, cfg: SearchConfig, generator: torch.Generator):
        super().__init__(evaluator, cfg.budget, generator)
        self.sparsity, self.layer_min = cfg.sparsity, cfg.layer_min

    def sample(self) -> torch.Tensor:
        return self.evaluator.space.random(self.sparsity, self.generator, self.layer_min).to("cpu", torch.bool)

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


def random_search(evaluator: Any, cfg: SearchConfig, generator: torch.Generator, *, progress: bool = True,
                  resume: dict[str, Any] | None = None, checkpoint: Checkpoint | None = None,
                  checkpoint_every: int = CHECKPOINT_EVERY) -> SearchResult:
    """The best of cfg.budget random masks of evaluator.space at cfg.sparsity (each layer above its
    cfg.layer_min floor); `accepted` in the history marks a new best."""
    check_config(cfg)
    return RandomSearch(evaluator, cfg, generator).run(
        None, progress=progress, resume=resume, checkpoint=checkpoint, checkpoint_every=checkpoint_every)


def greedy(evaluator: Any, start: torch.Tensor, cfg: SearchConfig, generator: torch.Generator, *,
           progress: bool = True, resume: dict[str, Any] | None = None, checkpoint: Checkpoint | None = None,
           checkpoint_every: int = CHECKPOINT_EVERY) -> SearchResult:
    """Hill climbing from `start` for cfg.budget evaluations with annealing's moves (cfg.mode is
    ignored: the default-mode neighbourhood schedule, tabu memory and restarts, at T = 0)."""
    check_config(cfg)
    plan = replace(plan_for(replace(cfg, mode="default", t0=None, cooling=None)), t0=0.0, cooling=1.0)
    return Annealer(evaluator, plan, cfg, generator, label="greedy").run(
        start, progress=progress, resume=resume, checkpoint=checkpoint, checkpoint_every=checkpoint_every)
