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
from ticketlab.search.anneal import Annealer, plan_for
from ticketlab.search.base import (CHECKPOINT_EVERY, Checkpoint, Evaluator, SamplingSearcher, Searcher,
                                   SearchResult, check_common)


class RandomSearch(SamplingSearcher):
    name = "random"
    label = "random search"

    def __init__(self, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator):
        super().__init__(evaluator, cfg.budget, generator)
        self.sparsity, self.layer_min = cfg.sparsity, cfg.layer_min

    @classmethod
    def build(cls, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator,
              features: torch.Tensor | None) -> Searcher:
        return cls(evaluator, cfg, generator)

    def sample(self) -> torch.Tensor:
        return self.evaluator.space.random(self.sparsity, self.generator, self.layer_min).to("cpu", torch.bool)


class Greedy(Annealer):
    """Annealing's moves at zero temperature, with annealing's options (cfg.mode is ignored: the
    default-mode neighbourhood schedule, tabu memory and restarts)."""

    name = "greedy"
    label = "greedy"

    @classmethod
    def defaults(cls, cfg: SearchConfig) -> dict[str, Any]:
        return Annealer.defaults(replace(cfg, mode="default"))  # greedy has no thesis mode

    @classmethod
    def build(cls, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator,
              features: torch.Tensor | None) -> Searcher:
        plan = replace(plan_for(replace(cfg, mode="default", t0=None, cooling=None)), t0=0.0, cooling=1.0)
        return cls(evaluator, plan, cfg, generator)


def random_search(evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator, *, progress: bool = True,
                  resume: dict[str, Any] | None = None, checkpoint: Checkpoint | None = None,
                  checkpoint_every: int = CHECKPOINT_EVERY) -> SearchResult:
    """The best of cfg.budget random masks of evaluator.space at cfg.sparsity (each layer above its
    cfg.layer_min floor); `accepted` in the history marks a new best."""
    check_common(cfg)
    return RandomSearch(evaluator, cfg, generator).run(
        None, progress=progress, resume=resume, checkpoint=checkpoint, checkpoint_every=checkpoint_every)


def greedy(evaluator: Evaluator, start: torch.Tensor, cfg: SearchConfig, generator: torch.Generator, *,
           progress: bool = True, resume: dict[str, Any] | None = None, checkpoint: Checkpoint | None = None,
           checkpoint_every: int = CHECKPOINT_EVERY) -> SearchResult:
    """Hill climbing from `start` for cfg.budget evaluations with annealing's moves (cfg.mode is
    ignored: the default-mode neighbourhood schedule, tabu memory and restarts, at T = 0)."""
    check_common(cfg)
    Annealer.check(cfg)
    cfg = Greedy.resolved(cfg)
    return Greedy.build(evaluator, cfg, generator, None).run(
        start, progress=progress, resume=resume, checkpoint=checkpoint, checkpoint_every=checkpoint_every)
