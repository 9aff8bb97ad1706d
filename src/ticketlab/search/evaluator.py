"""Scoring many masks of one network quickly, with exactly the scores of the thesis's evaluator.

`make_evaluator(model, weights, space, x, y)` returns an Evaluator whose `score(keep)` is
the accuracy (or -loss) of the network at checkpoint `weights` under the mask that the
flat keep-vector stands for, on (x, y): bit for bit what search.reference.reference_score
returns after reloading that checkpoint from disk (with exact=False, a loss within float
rounding of it). Nothing reloads; `weights` is never written; no model is copied per
candidate. Four ways of getting there:

- Incremental (on the CPU, any model whose forward is a chain of Linear/Conv layers, each with at
  most a ReLU and a BatchNorm: models/chain.py reads it from the traced graph, so BasicCNN, the
  zoo's MLPs and a user's own such model all qualify). The activations of the last two
  masks scored are kept; a candidate starts from the one it shares the most layers with
  (the current mask of a search, or the candidate just accepted). Layers before the first
  one whose mask changed are reused as they are; in that layer only the output units
  (neurons, filters) whose weights changed are recomputed; every later layer is recomputed,
  but only its units that can be nonzero (a pruned filter outputs exact zeros).
  Why this is exact: every number comes from the same operation (F.linear, F.conv2d,
  F.relu, F.batch_norm) on the same input values as in the model's forward, in the same
  batches of 256 images. Computing a subset of a layer's output units gives each unit the
  same bits as computing all of them, for convolutions, ReLU and BatchNorm of any size, and
  for Linear layers from 12 output rows on (below that, MKL on the CPUs tested takes another
  kernel, with another summation order), so subsets are padded to MIN_ROWS rows. A unit
  that is skipped is left at +0.0 where the full forward may hold -0.0; the next layer only
  ever multiplies it by a zero weight, so no score can tell. tests/test_search_evaluator.py
  checks == against the reference on random masks along move sequences.
- Forward (any other model or device): the masked weights live in the model's parameters,
  rewritten only for the parameters whose mask changed, and each score is one forward pass.
  Exact by construction; no per-candidate reload or copy.
- Trained (train_steps > 0): each candidate is reset to `weights`, trained that many
  iterations under its mask, then scored. Slow by design; it has no reference to equal.

- Delta (chains of Linear layers and ReLUs only, on the CPU, for accuracy; also for the loss with exact=False):
  search.incremental's DeltaEvaluator updates pre-activations by what each move flips. Its
  logits are within float rounding of the reference's, and its accuracy is the
  reference's exactly: images whose two best logits are too close to call are predicted
  again by an exact forward pass of their batch (see that module). A loss has no such
  certificate, so an exact loss objective gets the incremental evaluator.

score_many loops: batching candidates into one pass did not beat the loop on the CPU (on a
GPU it might; unmeasured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import TicketlabError, TrainConfig
from ticketlab.data import Split
from ticketlab.models.chain import ChainStep, layer_chain
from ticketlab.search.reference import SCORE_BATCH, check_metric, objective
from ticketlab.search.space import SearchSpace
from ticketlab.sparsity.mask import Mask
from ticketlab.sparsity.masked import MaskedTraining
from ticketlab.training.optim import build_optimizer

# Subsets of a layer's output units are computed in multiples of 16 (the channel blocks of
# oneDNN's convolutions: a thinner one is no faster) and at least 32 (MKL computes a Linear
# layer of fewer than 12 outputs with another kernel, whose sums round differently).
ROW_BLOCK, MIN_ROWS = 16, 32


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

    def score(self, keep: torch.Tensor) -> float:
        """Accuracy in [0, 1] of the network under the mask `keep` stands for, or -loss when metric == "loss"."""
        mask = self.space.to_mask(keep)
        self.evaluations += 1
        return self._score(mask)

    def score_many(self, keeps: Sequence[torch.Tensor]) -> list[float]:
        """The scores of several masks (a loop of `score`: see the module doc)."""
        return [self.score(keep) for keep in keeps]

    def _score(self, mask: Mask) -> float:
        raise NotImplementedError

    @torch.inference_mode()
    def forward_score(self, model: nn.Module) -> float:
        """The score of `model` as it is (in eval mode), batch by batch."""
        return objective(((model(xb), yb) for xb, yb in self.batches), self.metric)


def make_evaluator(model: nn.Module, weights: dict[str, torch.Tensor], space: SearchSpace, x: torch.Tensor,
                   y: torch.Tensor, *, metric: str = "accuracy", train_steps: int = 0,
                   train_config: TrainConfig | None = None, train_data: Split | None = None,
                   exact: bool = True) -> Evaluator:
    """An Evaluator of masks of `space` over `model` at the checkpoint `weights` (a state_dict,
    read, never written), scored on (x, y) (on the model's device).

    The evaluator owns `model`: it may load `weights` into it and overwrite its parameters.
    With train_steps > 0 each candidate first trains that many iterations from `weights`
    under its mask, with train_config's optimiser, learning rate (constant) and batch size,
    on train_data (default: the scoring subset itself), in an order fixed by its seed.

    exact=False trades the bit-for-bit equality with the reference for speed where a faster
    way exists: the loss of a chain of Linear layers on the CPU is then scored by a
    search.incremental.DeltaEvaluator (within float rounding of the reference's); accuracy
    always is (it certifies its accuracies equal to the reference's); any other model gets
    the exact evaluator it gets anyway.
    """
    if train_steps < 0:
        raise TicketlabError(f"train_steps is a number of iterations, at least 0; got {train_steps}")
    expected = model.state_dict()
    unfit = [key for key, value in expected.items() if key not in weights or weights[key].shape != value.shape]
    if unfit:
        raise TicketlabError(f"the checkpoint does not fit the model ({', '.join(unfit[:3])} missing or of "
                             "another shape); expected the weights of this model")
    space.to_mask(torch.ones(space.size, dtype=torch.bool)).check_fits(model)
    if train_steps:
        data = train_data if train_data is not None else Split(x, y)
        return TrainedEvaluator(model, weights, space, x, y, metric, train_steps, train_config or TrainConfig(), data)
    stages = layer_chain(model, x.dim())
    if stages is not None and is_perceptron(model, stages) and x.device.type == "cpu" and \
            (metric == "accuracy" or not exact):
        from ticketlab.search.incremental import DeltaEvaluator  # it imports this module

        return DeltaEvaluator(model, stages, weights, space, x, y, metric)
    if stages is not None and x.device.type == "cpu":
        return IncrementalEvaluator(model, stages, weights, space, x, y, metric)
    return ForwardEvaluator(model, weights, space, x, y, metric)


def is_perceptron(model: nn.Module, stages: list[ChainStep]) -> bool:
    """A chain of Linear layers with nothing but ReLUs between them: what delta scoring handles."""
    modules = dict(model.named_modules())
    return all(isinstance(modules[s.layer], nn.Linear) and s.norm is None for s in stages)


# --- the forward pass as a chain of layers --------------------------------------------------

class ChainLayer:
    """A stage's tensors from the checkpoint, and its output units computed under a mask."""

    def __init__(self, model: nn.Module, stage: ChainStep, weights: dict[str, torch.Tensor], device: torch.device):
        modules = dict(model.named_modules())
        self.stage, self.module = stage, modules[stage.layer]
        if isinstance(self.module, nn.Conv2d) and self.module.padding_mode != "zeros":
            raise TicketlabError(f"{stage.layer}: padding mode {self.module.padding_mode} is not supported")
        self.norm = modules[stage.norm] if stage.norm else None
        roles = {"weight": f"{stage.layer}.weight", "bias": f"{stage.layer}.bias"}
        if stage.norm:
            roles |= {"norm_weight": f"{stage.norm}.weight", "norm_bias": f"{stage.norm}.bias"}
        self.names = {role: name for role, name in roles.items() if name in weights}  # role -> parameter
        self.tensors = {role: weights[name].to(device) for role, name in self.names.items()}
        if self.norm is not None:
            self.running = (weights[f"{stage.norm}.running_mean"].to(device),
                            weights[f"{stage.norm}.running_var"].to(device))
        self.rows = self.tensors["weight"].shape[0]

    def changed_rows(self, new: Mask, old: Mask) -> torch.Tensor:
        """Which output units the two masks treat differently (their weights, bias or BatchNorm)."""
        changed = torch.zeros(self.rows, dtype=torch.bool)
        for name in self.names.values():
            if name in new and not torch.equal(new[name], old[name]):
                changed |= (new[name] != old[name]).reshape(self.rows, -1).any(1)
        return changed

    def live_rows(self, mask: Mask) -> torch.Tensor:
        """The output units that can be nonzero under the mask: a unit whose weights, bias and
        BatchNorm scale and shift are all pruned outputs exact zeros."""
        def kept(role: str, absent: bool) -> torch.Tensor:
            name = self.names.get(role)
            if name is None:
                return torch.full((self.rows,), absent)
            return mask[name].reshape(self.rows, -1).any(1) if name in mask else torch.ones(self.rows, dtype=torch.bool)

        live = kept("weight", False) | kept("bias", False)
        if self.norm is not None:
            # BatchNorm maps a zero to -mean / std * scale + shift; without scale or shift it cannot be zeroed.
            live |= kept("norm_weight", True) | kept("norm_bias", True)
        return live

    def rows_to_compute(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Indices of `rows`, padded with others to a multiple of ROW_BLOCK and at least
        MIN_ROWS; None when that is all of them."""
        wanted = max(MIN_ROWS, -(-int(rows.sum()) // ROW_BLOCK) * ROW_BLOCK)
        if wanted >= self.rows:
            return None
        rows = rows.clone()
        rows[(~rows).nonzero().flatten()[:wanted - int(rows.sum())]] = True
        return rows.nonzero().flatten()

    def forward(self, inputs: list[torch.Tensor], mask: Mask, rows: torch.Tensor | None) -> list[torch.Tensor]:
        """The stage's output on each batch, for the output units `rows` (None: all)."""
        def masked(role: str) -> torch.Tensor | None:
            if role not in self.tensors:
                return None
            tensor = self.tensors[role] if rows is None else self.tensors[role][rows]
            keep = mask.get(self.names[role])
            if keep is None:
                return tensor
            return tensor * (keep if rows is None else keep[rows]).to(tensor.device)

        weight, bias = masked("weight"), masked("bias")
        if self.norm is not None:
            mean, var = self.running if rows is None else (self.running[0][rows], self.running[1][rows])
            scale, shift = masked("norm_weight"), masked("norm_bias")
        outputs = []
        for x in inputs:
            if self.stage.flatten:
                x = x.flatten(1)
            if isinstance(self.module, nn.Conv2d):
                m = self.module
                out = F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, m.groups)
            else:
                out = F.linear(x, weight, bias)
            if self.norm is not None and self.stage.norm_first:
                out = F.batch_norm(out, mean, var, scale, shift, False, 0.0, self.norm.eps)
            if self.stage.relu:
                out = F.relu(out)
            if self.norm is not None and not self.stage.norm_first:
                out = F.batch_norm(out, mean, var, scale, shift, False, 0.0, self.norm.eps)
            outputs.append(out)
        return outputs


@dataclass
class Snapshot:
    """A mask scored, with every stage's output on every batch under it."""

    mask: Mask
    outputs: list[list[torch.Tensor]]
    score: float


class IncrementalEvaluator(Evaluator):
    """Recomputes only what a mask changed since one of the last two masks scored (see the module doc)."""

    KEEP = 2  # snapshots kept: a search's current mask and its latest candidate

    def __init__(self, model: nn.Module, stages: list[ChainStep], weights: dict[str, torch.Tensor],
                 space: SearchSpace, x: torch.Tensor, y: torch.Tensor, metric: str):
        super().__init__(space, x, y, metric)
        self.layers = [ChainLayer(model, stage, weights, x.device) for stage in stages]
        self.snapshots: list[Snapshot] = []

    def first_change(self, snapshot: Snapshot, mask: Mask) -> int:
        """The first stage whose output the mask changes (len(stages) if none)."""
        for k, layer in enumerate(self.layers):
            if any(name in mask and not torch.equal(mask[name], snapshot.mask[name]) for name in layer.names.values()):
                return k
        return len(self.layers)

    @torch.inference_mode()
    def _score(self, mask: Mask) -> float:
        base, first = None, 0
        for snapshot in self.snapshots:  # most recent first: it wins ties
            k = self.first_change(snapshot, mask)
            if base is None or k > first:
                base, first = snapshot, k
        if base is not None and first == len(self.layers):  # scored before
            self.snapshots = [base, *(s for s in self.snapshots if s is not base)]
            return base.score
        inputs = [xb for xb, _ in self.batches]
        outputs = []
        for k, layer in enumerate(self.layers):
            if base is not None and k < first:
                out = base.outputs[k]
            elif base is not None and k == first:
                out = self.update(layer, inputs, mask, base, k)
            else:
                out = self.recompute(layer, inputs, mask)
            outputs.append(out)
            inputs = out
        score = objective(zip(outputs[-1], (yb for _, yb in self.batches)), self.metric)
        self.snapshots = [Snapshot(mask, outputs, score), *([base] if base is not None else [])][:self.KEEP]
        return score

    @staticmethod
    def update(layer: ChainLayer, inputs: list[torch.Tensor], mask: Mask, base: Snapshot, k: int) -> list[torch.Tensor]:
        """The base snapshot's output of stage k with the units whose weights changed recomputed."""
        rows = layer.rows_to_compute(layer.changed_rows(mask, base.mask))
        if rows is None:
            return layer.forward(inputs, mask, None)
        return [old.clone().index_copy_(1, rows.to(old.device), new)
                for old, new in zip(base.outputs[k], layer.forward(inputs, mask, rows))]

    @staticmethod
    def recompute(layer: ChainLayer, inputs: list[torch.Tensor], mask: Mask) -> list[torch.Tensor]:
        """Stage output from new inputs: only the units that can be nonzero are computed."""
        rows = layer.rows_to_compute(layer.live_rows(mask))
        if rows is None:
            return layer.forward(inputs, mask, None)
        outputs = []
        for new in layer.forward(inputs, mask, rows):
            shape = (new.shape[0], layer.rows, *new.shape[2:])
            outputs.append(new.new_zeros(shape).index_copy_(1, rows.to(new.device), new))
        return outputs


# --- the whole forward pass ---------------------------------------------------------------

class ForwardEvaluator(Evaluator):
    """One forward pass of the model per score; only the parameters whose mask changed are rewritten."""

    def __init__(self, model: nn.Module, weights: dict[str, torch.Tensor], space: SearchSpace,
                 x: torch.Tensor, y: torch.Tensor, metric: str):
        super().__init__(space, x, y, metric)
        self.model = model
        self.weights = weights
        model.load_state_dict(weights)
        model.eval()
        self.params = dict(model.named_parameters())
        self.written: dict[str, torch.Tensor] = {}  # the mask each parameter now holds

    def write(self, mask: Mask) -> None:
        with torch.no_grad():
            for name, keep in mask.items():
                if name not in self.written or not torch.equal(self.written[name], keep):
                    param = self.params[name]
                    param.copy_(self.weights[name].to(param.device) * keep.to(param.device))
                    self.written[name] = keep

    def _score(self, mask: Mask) -> float:
        self.write(mask)
        return self.forward_score(self.model)


class TrainedEvaluator(Evaluator):
    """Trains each candidate briefly from the checkpoint under its mask, then scores it."""

    def __init__(self, model: nn.Module, weights: dict[str, torch.Tensor], space: SearchSpace, x: torch.Tensor,
                 y: torch.Tensor, metric: str, steps: int, cfg: TrainConfig, data: Split):
        super().__init__(space, x, y, metric)
        self.model, self.weights = model, weights
        self.steps, self.cfg, self.data = steps, cfg, data

    def _score(self, mask: Mask) -> float:
        self.model.load_state_dict(self.weights)  # copies: the last candidate's training moved every weight
        self.train(mask)
        self.model.eval()
        return self.forward_score(self.model)

    def train(self, mask: Mask) -> None:
        constraint = MaskedTraining(self.model, mask)
        optimizer = build_optimizer(self.model.parameters(), self.cfg)
        constraint.enforce(optimizer)
        order_generator = torch.Generator().manual_seed(self.cfg.seed)
        n, batch = len(self.data.y), self.cfg.batch_size
        per_epoch = -(-n // batch)
        device = self.data.x.device
        self.model.train()
        # Dropout draws from the global generator: seeding it gives a mask the same score every time.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed)
            for step in range(self.steps):
                if step % per_epoch == 0:
                    order = torch.randperm(n, generator=order_generator).to(device)
                index = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
                loss = F.cross_entropy(self.model(self.data.x[index]), self.data.y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                constraint.before_step()
                optimizer.step()
