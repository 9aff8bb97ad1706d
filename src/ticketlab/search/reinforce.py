"""A REINFORCE agent that learns which units to keep at a fixed sparsity (the thesis's first attempt, done properly).

Each episode the policy scores every unit of the search space, a set of units to keep is
sampled from those scores, and the reward is the evaluator's score of that mask (the same
objective and budget of evaluations as annealing: accuracy or -loss of the masked network
at checkpoint k). The best mask evaluated is the result.

- State: a few features per unit from the checkpoint's weights (search.features).
- Policy (default mode): score_u = MLP(features_u) + offset_u. The MLP (features -> hidden ->
  hidden -> 1, shared by every unit) lets what is learned about some units carry over to
  units with similar features; the per-unit offsets let the agent commit to single units,
  which it must do to optimise one network's mask. The MLP's last layer and the offsets
  start at zero, so the first policy is uniform: the agent starts as random search, and
  anything better is learned.
- Action: an exact-count set without replacement by Plackett-Luce sampling (Gumbel top-k):
  first each layer's floor (SearchSpace.layer_floor: cfg.layer_min of it, at least one
  unit) within the layer, then the rest of the kept units over all units left, so every mask
  keeps exactly what space.random keeps. `log_prob` is the log-probability of the ordered
  draw: log P = sum_i [s_(j_i) - logsumexp(s over the units still available at draw i)].
  REINFORCE with the ordering as the random action is a valid (unbiased) estimator of the
  gradient of the expected reward, since the reward depends on the ordering only through
  its set; the set's own probability would sum over k! orderings, which is intractable, and
  would only lower the variance.
- Update: every cfg.episodes episodes (evaluations), one Adam step on
  -mean_b[(R_b - baseline) log P_b] - cfg.entropy * mean_b H_b. The baseline is a moving
  average of the rewards (factor cfg.baseline_decay per episode) from before the batch (the
  first batch's own mean for the first batch). H_b is the mean entropy of the softmax each
  draw of episode b was made from: a regulariser that keeps the scores from collapsing too
  early, like any entropy bonus, not the entropy of the set distribution (intractable).
- Seeded: the policy's initialisation by cfg.seed, every draw by the search's generator.

thesis mode reproduces the earlier attempt (EEE 198, seed 002), a flawed method kept for
comparison: an MLP of the whole state (per-layer normalised mean |w| of every unit, n -> 512
-> 512 -> n) gives a softmax over units; the lowest-probability units are pruned
deterministically (the floors first, as above); the update after every episode ascends
cfg.reward_sign * R * sum_u log p_u, over ALL units. That is not a policy gradient: nothing
is sampled, and the all-outputs term pushes the softmax towards uniform (sign +1) or away
from it (sign -1, the inverted reward with which the original "worked") whatever was chosen.

No FLOPs or parameter term is added to the reward: at a fixed unit count the objective is
the same as annealing's, so the methods compare at equal budgets on equal terms.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search.base import (CHECKPOINT_EVERY, Checkpoint, Evaluator, SamplingSearcher, Searcher,
                                   SearchResult, SearchState, check_common)
from ticketlab.search.space import Layer

DEFAULT_HIDDEN = 64
THESIS_HIDDEN = 512  # the earlier attempt's 960-512-512-960 network
# UnitPolicy runs its MLP over this many units at a time. Over a per-weight space (266,200 units
# of LeNet-300-100) one pass makes (units, hidden) intermediates of 68 MB whose cost is memory
# traffic: in blocks of 4,096 units, forward and backward took 0.20 s here against 0.67 s. A
# space of at most this many units (any filter space here) is computed exactly as in one pass.
POLICY_BLOCK = 4096


class UnitPolicy(nn.Module):
    """score_u = MLP(features_u) + offset_u; starts uniform (see the module doc)."""

    def __init__(self, features: torch.Tensor, hidden: int):
        super().__init__()
        self.features = features
        self.net = nn.Sequential(nn.Linear(features.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.offset = nn.Parameter(torch.zeros(len(features)))

    def forward(self) -> torch.Tensor:
        return torch.cat([self.net(block) for block in self.features.split(POLICY_BLOCK)]).squeeze(1) + self.offset


class ThesisPolicy(nn.Module):
    """The earlier attempt's network: the whole state in, one logit per unit out."""

    def __init__(self, features: torch.Tensor, hidden: int):
        super().__init__()
        self.state = features[:, 0]  # mean |w|, min-max normalised per layer
        n = len(features)
        self.net = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n))

    def forward(self) -> torch.Tensor:
        return self.net(self.state)


def gumbel(n: int, generator: torch.Generator) -> torch.Tensor:
    uniform = torch.rand(n, generator=generator, dtype=torch.float64).clamp_min(1e-300)
    return -torch.log(-torch.log(uniform))


def draw(scores: torch.Tensor, layers: list[Layer], floors: list[int], kept: int,
         generator: torch.Generator | None) -> torch.Tensor:
    """The indices of `kept` units in the order drawn: each layer's floor within it, then the rest over
    all units left, each stage a Plackett-Luce sample of `scores` (Gumbel top-k, fresh noise per stage).
    generator None: no noise, i.e. the highest scores (thesis mode's deterministic choice)."""
    scores = scores.detach().to("cpu", torch.float64)
    n = len(scores)

    def perturbed() -> torch.Tensor:
        return scores if generator is None else scores + gumbel(n, generator)

    def highest(values: torch.Tensor, count: int) -> torch.Tensor:
        # Noisy scores are distinct (float64 Gumbel noise), so topk's order is argsort's, ~5x faster
        # over 266,200 units; without noise equal scores must keep their index order.
        if generator is None:
            return values.argsort(descending=True, stable=True)[:count]
        return values.topk(count).indices

    noisy, chosen = perturbed(), []
    for layer, floor in zip(layers, floors):
        chosen.append(highest(noisy[layer.slice], floor) + layer.slice.start)
    taken = torch.zeros(n, dtype=torch.bool)
    for part in chosen:
        taken[part] = True
    rest = (~taken).nonzero().flatten()
    noisy = perturbed()
    chosen.append(rest[highest(noisy[rest], kept - sum(floors))])
    return torch.cat(chosen)


def plackett_luce(scores: torch.Tensor, picked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of drawing the candidates `picked` (positions into `scores`) in that order without
    replacement, each draw from the softmax of the scores still available, and each draw's entropy."""
    scores = scores.double()
    rest = torch.ones(len(scores), dtype=torch.bool)
    rest[picked] = False
    a, others = scores[picked], scores[rest]
    log_z = torch.logcumsumexp(a.flip(0), 0).flip(0)  # log sum of exp over picked[i:]
    if len(others):
        log_z = torch.logaddexp(log_z, torch.logsumexp(others, 0))
    # Each draw's entropy: log Z_i - E[s] under its softmax; weights relative to the largest score.
    top = scores.max().detach()
    wa, wo = torch.exp(a - top), torch.exp(others - top)
    z = torch.cumsum(wa.flip(0), 0).flip(0) + wo.sum()
    mean_score = (torch.cumsum((wa * a).flip(0), 0).flip(0) + (wo * others).sum()) / z
    return (a - log_z).sum(), log_z - mean_score


def log_prob(scores: torch.Tensor, order: torch.Tensor, layers: list[Layer],
             floors: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of a draw's order under `draw`'s scheme (differentiable in `scores`), and the mean
    entropy of the softmaxes its draws were made from."""
    total, entropies, start = scores.new_zeros((), dtype=torch.float64), [], 0
    for layer, floor in zip(layers, floors):
        logp, h = plackett_luce(scores[layer.slice], order[start:start + floor] - layer.slice.start)
        total, start = total + logp, start + floor
        entropies.append(h)
    rest = torch.ones(len(scores), dtype=torch.bool)
    rest[order[:start]] = False
    candidates = rest.nonzero().flatten()
    position = torch.full((len(scores),), -1, dtype=torch.long)
    position[candidates] = torch.arange(len(candidates))
    if len(order) > start:
        logp, h = plackett_luce(scores[candidates], position[order[start:]])
        total = total + logp
        entropies.append(h)
    return total, torch.cat(entropies).mean()


class Reinforce(SamplingSearcher):
    """REINFORCE over exact-count masks (default mode), or the earlier attempt's agent (thesis mode): masks
    drawn from a policy that learns from their scores."""

    name = "reinforce"
    label = "reinforce"
    needs_features = True
    options = ("policy_lr", "entropy", "baseline_decay", "episodes", "hidden", "reward_sign")

    def __init__(self, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator, features: torch.Tensor):
        super().__init__(evaluator, cfg.budget, generator)
        space = evaluator.space
        if features.shape[0] != space.size:
            raise ValueError(f"features for {features.shape[0]} units, but the space has {space.size}")
        space.random(cfg.sparsity, torch.Generator(), cfg.layer_min)  # a throwaway draw: do the floors fit?
        self.layers, self.floors = space.layers, space.layer_floor(cfg.layer_min)
        self.kept = space.size - round(space.size * cfg.sparsity)
        self.thesis = cfg.mode == "thesis"
        self.batch = 1 if self.thesis else cfg.episodes
        self.entropy, self.decay, self.sign = cfg.entropy, cfg.baseline_decay, cfg.reward_sign
        network = ThesisPolicy if self.thesis else UnitPolicy
        hidden = cfg.hidden or (THESIS_HIDDEN if self.thesis else DEFAULT_HIDDEN)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.policy = network(features.to("cpu", torch.float32), hidden)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.policy_lr)
        self.baseline: float | None = None
        self.pending: list[tuple[torch.Tensor, float]] = []  # (order, reward) of this batch's episodes so far
        self.current_scores: torch.Tensor | None = None  # the policy's scores, with their graph, until it changes
        self.terms: list[tuple[torch.Tensor, torch.Tensor] | None] = []  # each pending episode's episode_terms

    @classmethod
    def check(cls, cfg: SearchConfig) -> None:
        if not cfg.policy_lr > 0:
            raise TicketlabError(f"policy_lr must be above 0, got {cfg.policy_lr}")
        if not cfg.entropy >= 0:
            raise TicketlabError(f"the entropy bonus must be at least 0, got {cfg.entropy}")
        if not 0 <= cfg.baseline_decay < 1:
            raise TicketlabError(f"baseline_decay must be in [0, 1), got {cfg.baseline_decay}")
        for name in ("episodes", "hidden"):
            if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
                raise TicketlabError(f"{name} must be at least 1, got {getattr(cfg, name)}")
        if cfg.reward_sign not in (1, -1):
            raise TicketlabError(f"reward_sign must be 1 or -1, got {cfg.reward_sign}")
        thesis = cfg.method == cls.name and cfg.mode == "thesis"
        if cfg.reward_sign != 1 and not thesis:
            raise TicketlabError("reward_sign belongs to the earlier attempt's update; use it with reinforce "
                                 "--mode thesis")
        if thesis and cfg.granularity != "filter":
            raise TicketlabError("reinforce's thesis mode is the earlier attempt's filter agent; use --granularity "
                                 "filter")

    @classmethod
    def build(cls, evaluator: Evaluator, cfg: SearchConfig, generator: torch.Generator,
              features: torch.Tensor | None) -> Searcher:
        if features is None:
            raise TicketlabError("reinforce needs the units' features (search.features.unit_features)")
        return cls(evaluator, cfg, generator, features)

    @classmethod
    def summarise(cls, found: SearchResult) -> dict[str, Any]:
        """Where the policy ended: its entropy, from the first episode's, and the reward baseline."""
        first, last = found.history[0], found.history[-1]
        return {"policy": {"first_entropy": first["entropy"], "final_entropy": last["entropy"],
                           "final_baseline": last["baseline"]}}

    # --- resume: the agent's own state travels beside the SearchState fields --------------

    def load_agent(self, agent: dict[str, Any]) -> None:
        self.policy.load_state_dict(agent["policy"])
        self.optimizer.load_state_dict(agent["optimizer"])
        self.baseline = agent["baseline"]
        self.pending = list(zip(agent["orders"], agent["rewards"]))
        # In the order the uninterrupted search made them: the order in which autograd sums the
        # branches of the update's graph, hence the rounding of its gradient, follows it.
        self.current_scores = None
        self.terms = [self.episode_terms(order) for order, _ in self.pending]

    def agent_state(self) -> dict[str, Any]:
        return {"policy": {k: v.clone() for k, v in self.policy.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()), "baseline": self.baseline,
                "orders": [order for order, _ in self.pending], "rewards": [r for _, r in self.pending]}

    # --- episodes ----------------------------------------------------------------------------

    def policy_scores(self) -> torch.Tensor:
        """The policy's scores, computed once per update: every episode of a batch draws from the same
        policy, and the update differentiates the very scores they were drawn from."""
        if self.current_scores is None:
            self.current_scores = self.policy()
        return self.current_scores

    def sample(self) -> torch.Tensor:
        scores = self.policy_scores().detach()
        self.order = draw(scores, self.layers, self.floors, self.kept, None if self.thesis else self.generator)
        keep = torch.zeros(len(scores), dtype=torch.bool)
        keep[self.order] = True
        return keep

    def begin(self, start: torch.Tensor | None) -> SearchState:
        state = super().begin(start)
        self.learn(state)
        return state

    def iterate(self, state: SearchState) -> None:
        super().iterate(state)
        self.learn(state)

    def learn(self, state: SearchState) -> None:
        """Complete the episode's history row; update the policy once the batch is full."""
        terms = self.episode_terms(self.order)
        if terms is not None:
            entropy = float(terms[1].detach())
        else:  # thesis mode: the entropy of the softmax over every unit
            scores = self.policy_scores().detach().double()
            entropy = float(-(F.softmax(scores, 0) * F.log_softmax(scores, 0)).sum())
        state.history[-1].update(episode=state.step, reward=state.current_score, baseline=self.baseline,
                                 entropy=entropy)
        self.pending.append((self.order, state.current_score))
        self.terms.append(terms)
        if len(self.pending) == self.batch:
            self.update()

    def episode_terms(self, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A draw's log-probability and entropy under the current policy, with their graph for the update
        (default mode; thesis mode's update needs neither)."""
        return None if self.thesis else log_prob(self.policy_scores(), order, self.layers, self.floors)

    def update(self) -> None:
        scores = self.policy_scores()
        rewards = torch.tensor([r for _, r in self.pending], dtype=torch.float64)
        if self.thesis:
            loss = -self.sign * rewards[0] * F.log_softmax(scores.double(), 0).sum()
        else:
            baseline = rewards.mean() if self.baseline is None else torch.tensor(self.baseline, dtype=torch.float64)
            logps, entropies = zip(*self.terms)
            loss = -((rewards - baseline) * torch.stack(logps)).mean() - self.entropy * torch.stack(entropies).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.current_scores = None
        if not self.thesis:
            for reward in rewards.tolist():
                self.baseline = reward if self.baseline is None else \
                    self.decay * self.baseline + (1 - self.decay) * reward
        self.pending, self.terms = [], []


def reinforce(evaluator: Evaluator, features: torch.Tensor, cfg: SearchConfig, generator: torch.Generator, *,
              progress: bool = True, resume: dict[str, Any] | None = None, checkpoint: Checkpoint | None = None,
              checkpoint_every: int = CHECKPOINT_EVERY) -> SearchResult:
    """cfg.budget episodes of the REINFORCE agent (cfg.mode default) or of the earlier attempt's agent
    (thesis) over evaluator.space at cfg.sparsity, `features` one row per unit (search.features);
    `accepted` in the history marks a new best. Resumes exactly from a saved state, as annealing does."""
    check_common(cfg)
    Reinforce.check(cfg)
    return Reinforce(evaluator, cfg, generator, features).run(
        None, progress=progress, resume=resume, checkpoint=checkpoint, checkpoint_every=checkpoint_every)
