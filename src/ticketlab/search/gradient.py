"""Masks learned by gradient with the weights frozen: edge-popup and Bernoulli supermasks.

Both learn one real score per unit of the search space (a weight, or a filter/unit), while
the network's weights stay at the searched checkpoint; only the scores train, by SGD on the
cross-entropy of the search images, through a straight-through estimator:

- edgepopup (Ramanujan et al. 2020): the forward pass keeps the units of highest score,
  an exact count per layer; the backward pass hands the mask's gradient to the scores
  unchanged (the top-k is treated as the identity). Scores start as kaiming_uniform(a=√5)
  of the weights' shape (uniform within ±1/sqrt(fan-in)), as the original code does.
- supermask (Zhou et al. 2019): each unit is kept with probability sigmoid(score); the
  forward pass samples a mask and the backward pass differentiates through the probability.
  Zhou's masks are independent Bernoulli draws of no fixed size; to search at the same exact
  sparsity as every other searcher, the sample is the same count per layer drawn by
  Gumbel-top-k (sampling units without replacement, in proportion to their odds). The mask
  it reports is the most probable one (the top-k of the scores).

Per layer, the count kept is the layer's share of the global count (largest remainder),
never below the layer's floor (layer_min), so the global sparsity is exactly the search's.

Cost, the budget's unit being one evaluation of the objective's images: every step first
scores the current mask with the evaluator (1), then trains one pass over the objective's
images in batches of SCORE_BATCH, which costs 3 (a forward pass, and a backward pass of about
two: the gradients of the activations and of the masked weights, which the scores'
gradients are made from; the usual estimate of a training step as 3 forward passes). A
step therefore spends 4 evaluations; a budget that does not divide leaves the rest unspent.
The network runs in eval mode throughout (BatchNorm's running statistics, no dropout): the
objective every searcher maximises is the eval-mode accuracy.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search.base import Evaluator, Searcher, SearchState, history_row
from ticketlab.search.space import SearchSpace

TRAIN_COST = 3  # evaluations a training pass over the objective's images costs
MOMENTUM = 0.9
WEIGHT_DECAY = {"edgepopup": 5e-4, "supermask": 0.0}  # on the scores, as the originals' SGD
LEARNING_RATE = {"edgepopup": 0.1, "supermask": 10.0}


def layer_counts(space: SearchSpace, sparsity: float, layer_min: float) -> list[int]:
    """Units each layer keeps: its share of round(size * (1 - sparsity)) by largest remainder,
    within [floor, size]."""
    kept, floors = space.kept_and_floors(sparsity, layer_min)
    shares = [kept * layer.size / space.size for layer in space.layers]
    counts = [min(layer.size, max(floor, math.floor(share)))
              for layer, floor, share in zip(space.layers, floors, shares)]
    while sum(counts) < kept:  # the largest remainder first, where a layer has room
        room = [k for k, layer in enumerate(space.layers) if counts[k] < layer.size]
        counts[max(room, key=lambda k: (shares[k] - counts[k], -k))] += 1
    while sum(counts) > kept:  # floors took more than their share: the most over it give back
        over = [k for k in range(len(counts)) if counts[k] > floors[k]]
        counts[max(over, key=lambda k: (counts[k] - shares[k], -k))] -= 1
    return counts


def top_k(values: torch.Tensor, space: SearchSpace, counts: list[int]) -> torch.Tensor:
    """The keep-vector of the `counts[l]` highest values within each layer l."""
    keep = torch.zeros(space.size, dtype=torch.bool, device=values.device)
    for layer, count in zip(space.layers, counts):
        keep[layer.slice.start + values[layer.slice].topk(count).indices] = True
    return keep


class StraightThrough(torch.autograd.Function):
    """Forward: the mask given; backward: its gradient to the surrogate, times the surrogate's
    derivative given (1 for edge-popup's identity, sigmoid' for a Bernoulli mask)."""

    @staticmethod
    def forward(ctx: Any, surrogate: torch.Tensor, mask: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(slope)
        return mask.to(surrogate.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (slope,) = ctx.saved_tensors
        return grad * slope, None, None


class GradientSearcher(Searcher):
    """The loop both gradient searchers share (see the module doc); they differ in `sample`,
    how a training mask is drawn from the scores, and in its gradient."""

    starts_from_mask = False
    options: ClassVar[tuple[str, ...]] = ("score_lr",)

    def __init__(self, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator):
        super().__init__(evaluator, cfg.budget, generator)
        if evaluator.network is None:
            raise TicketlabError(f"{self.name} trains with the network itself; this evaluator does not expose it")
        module, weights = evaluator.network
        self.module, self.space = module.eval(), evaluator.space  # eval mode, as the objective scores it
        device = next(iter(weights.values())).device
        self.frozen = {name: value.to(device) for name, value in weights.items()}  # read, never written
        self.batches = evaluator.batches  # the objective's images, in the reference's batches of 256
        self.counts = layer_counts(self.space, cfg.sparsity, cfg.layer_min)
        self.scores = nn.Parameter(self.initial_scores(module, device))
        self.optimizer = torch.optim.SGD([self.scores], lr=cfg.score_lr or LEARNING_RATE[self.name],
                                         momentum=MOMENTUM, weight_decay=WEIGHT_DECAY[self.name])

    @classmethod
    def check(cls, cfg: SearchConfig) -> None:
        if cfg.score_lr is not None and not cfg.score_lr > 0:
            raise TicketlabError(f"score_lr must be positive, got {cfg.score_lr}")
        if cfg.method == cls.name and (cfg.train_steps or cfg.mode == "thesis"):
            raise TicketlabError(f"{cls.name} learns masks of the network as it is at the checkpoint, by gradient: "
                                 "it has no thesis mode and does not train candidates (train_steps)")

    @classmethod
    def build(cls, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator,
              features: torch.Tensor | None) -> Searcher:
        return cls(evaluator, cfg, generator)

    def initial_scores(self, module: nn.Module, device: torch.device) -> torch.Tensor:
        """kaiming_uniform(a=√5) per layer: uniform within ±1/sqrt(fan-in) of the layer's weight
        (for units, of the units' own count), drawn from the search's generator."""
        params = dict(module.named_parameters())
        parts = []
        for layer in self.space.layers:
            weight = params.get(layer.name)
            fan_in = weight[0].numel() if weight is not None and weight.dim() > 1 else layer.size
            bound = 1 / math.sqrt(fan_in)
            parts.append((torch.rand(layer.size, generator=self.generator) * 2 - 1) * bound)
        return torch.cat(parts).to(device)

    def mask(self) -> torch.Tensor:
        """The mask the scores stand for now: the top count of each layer."""
        return top_k(self.scores.detach(), self.space, self.counts).cpu()

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A training mask (a keep-vector) and the surrogate's derivative per unit."""
        raise NotImplementedError

    def next_cost(self, state: SearchState) -> int:
        return 1 + TRAIN_COST

    def begin(self, start: torch.Tensor | None) -> SearchState:
        keep = self.mask()
        score = self.evaluate(keep)
        state = SearchState(1, keep, score, keep, score)
        state.history.append({**history_row(state, score, True, current=score), "loss": None})
        return state

    def iterate(self, state: SearchState) -> None:
        loss = self.train_pass()
        keep = self.mask()
        score = self.evaluate(keep)
        state.step += 1 + TRAIN_COST
        state.current, state.current_score = keep, score
        improved = score > state.best_score
        if improved:
            state.best, state.best_score = keep, score
        state.history.append({**history_row(state, score, improved, current=score), "loss": loss})

    def train_pass(self) -> float:
        """One pass of SGD on the scores over the objective's images (in an order drawn from the
        search's generator); the mean training loss."""
        order = torch.randperm(len(self.batches), generator=self.generator).tolist()
        total, count = 0.0, 0
        for index in order:
            xb, yb = self.batches[index]
            keep, slope = self.sample()
            values = StraightThrough.apply(self.scores, keep, slope)
            soft = self.space.to_soft_mask(values)
            params = {name: self.frozen[name] * soft[name] if name in soft else self.frozen[name]
                      for name in self.frozen}
            loss = F.cross_entropy(functional_call(self.module, params, (xb,)), yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total, count = total + float(loss.detach()) * len(yb), count + len(yb)
        return total / count

    # --- resume: the scores and their optimiser travel beside the SearchState fields --------

    def load_agent(self, agent: dict[str, Any]) -> None:
        with torch.no_grad():
            self.scores.copy_(agent["scores"])
        self.optimizer.load_state_dict(agent["optimizer"])

    def agent_state(self) -> dict[str, Any]:
        return {"scores": self.scores.detach().clone(), "optimizer": copy.deepcopy(self.optimizer.state_dict())}


class EdgePopup(GradientSearcher):
    """edge-popup: the top-k units by score in every forward pass, the straight-through gradient."""

    name = "edgepopup"
    label = "edge-popup"

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        return top_k(self.scores.detach(), self.space, self.counts), torch.ones_like(self.scores)


class Supermask(GradientSearcher):
    """Bernoulli supermasks at an exact count: units drawn by Gumbel-top-k on the scores (as
    logits), the gradient through sigmoid(score)."""

    name = "supermask"
    label = "supermask"

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.scores.detach()
        uniform = torch.rand(len(scores), generator=self.generator).clamp_(1e-12, 1 - 1e-12).to(scores.device)
        gumbel = -torch.log(-torch.log(uniform))
        probability = torch.sigmoid(scores)
        return top_k(scores + gumbel, self.space, self.counts), probability * (1 - probability)
