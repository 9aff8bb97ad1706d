"""The base of every evaluator: a fixed scoring subset in batches, and `score` of a flat keep-vector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.search.moves import Move
from ticketlab.search.reference import SCORE_BATCH, check_metric, objective
from ticketlab.search.space import SearchSpace
from ticketlab.sparsity.mask import Mask


class Evaluator:
    """Scores masks of one model at one checkpoint on one fixed data subset. Higher is better."""

    def __init__(self, space: SearchSpace, x: torch.Tensor, y: torch.Tensor, metric: str):
        check_metric(metric)
        if len(x) != len(y) or len(y) == 0:
            raise TicketlabError(f"the scoring subset needs as many labels as images, and some: {len(x)} images, "
                                 f"{len(y)} labels")
        self.space, self.metric = space, metric
        self.batches = list(zip(x.split(SCORE_BATCH), y.split(SCORE_BATCH)))
        self.evaluations = 0  # how many scores were computed
        # The network scored: its module and the checkpoint's state_dict (never written), for
        # searchers that compute with it themselves (search.gradient); set by make_evaluator.
        self.network: tuple[nn.Module, dict[str, torch.Tensor]] | None = None

    def score(self, keep: torch.Tensor, move: Move | None = None) -> float:
        """Accuracy in [0, 1] of the network under the mask `keep` stands for, or -loss when metric == "loss".
        `move` (optional) says how `keep` differs from a keep-vector scored before; an evaluator
        may use it, never needs it, and scores the same either way."""
        mask = self.space.to_mask(keep)
        self.evaluations += 1
        return self._score(mask)

    def score_many(self, keeps: Sequence[torch.Tensor], moves: Sequence[Move | None] | None = None) -> list[float]:
        """The scores of several masks (a loop of `score`: see the module doc)."""
        return [self.score(keep, move) for keep, move in zip(keeps, moves or [None] * len(keeps))]

    def _score(self, mask: Mask) -> float:
        raise NotImplementedError

    @torch.inference_mode()
    def forward_score(self, model: nn.Module) -> float:
        """The score of `model` as it is (in eval mode), batch by batch."""
        return objective(((model(xb), yb) for xb, yb in self.batches), self.metric)
