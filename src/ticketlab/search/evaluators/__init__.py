"""Scoring many masks of one network quickly, with exactly the scores of the thesis's evaluator.

`make_evaluator(model, weights, space, x, y)` returns an Evaluator whose `score(keep)` is
the accuracy (or -loss) of the network at checkpoint `weights` under the mask that the
flat keep-vector stands for, on (x, y): bit for bit what search.reference.reference_score
returns after reloading that checkpoint from disk (with exact=False, a loss within float
rounding of it). Nothing reloads; `weights` is never written; no model is copied per
candidate. Five ways of getting there:

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
  same bits as computing all of them, for ReLU and BatchNorm of any size, and for Linear and
  convolution layers wherever the CPU's library takes the same kernel for the subset as for the
  whole layer. It does not always (MKL on AVX2 for Linear layers of under 12 outputs, on AVX-512
  for a 784-input layer of up to 176 outputs), so each subset size is checked once per shape and
  process on random numbers (ChainLayer.subset_is_exact) and a subset is padded to a size that
  passed. A unit that is skipped is left at +0.0 where the full forward may hold -0.0; the
  next layer only ever multiplies it by a zero weight, so no score can tell. tests/test_search_evaluator.py
  checks == against the reference on random masks along move sequences.
- Forward (any other model or device): the masked weights live in the model's parameters,
  rewritten only for the parameters whose mask changed, and each score is one forward pass.
  Exact by construction; no per-candidate reload or copy.
- Trained (train_steps > 0): each candidate is reset to `weights`, trained that many
  iterations under its mask (its sparse Linear layers on sparse kernels, as `kernels` chooses),
  then scored. Slow by design; it has no reference to equal.

- Delta (chains of Linear layers and ReLUs only, on the CPU, for accuracy; also for the loss with exact=False):
  search.evaluators.delta's DeltaEvaluator updates pre-activations by what each move flips. Its
  logits are within float rounding of the reference's, and its accuracy is the
  reference's exactly: images whose two best logits are too close to call are predicted
  again by an exact forward pass of their batch (see that module). A loss has no such
  certificate, so an exact loss objective gets the incremental evaluator.

- Live (a unit space of any other such chain without grouped convolutions, on the CPU, for
  accuracy; also for the loss with exact=False): search.evaluators.live's LiveEvaluator
  computes each layer over live filters only, on its input's live filters only (9% of the
  multiplications of a layer at 70% of the filters pruned). Same certificate as the delta
  evaluator: its accuracy is the reference's exactly.

score_many loops: batching candidates into one pass did not beat the loop on the CPU (on a
GPU it might; unmeasured).
"""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.config import TicketlabError, TrainConfig
from ticketlab.data import Split
from ticketlab.models.chain import ChainStep, layer_chain
from ticketlab.search.evaluators.base import Evaluator
from ticketlab.search.evaluators.chain import IncrementalEvaluator
from ticketlab.search.evaluators.delta import DeltaEvaluator
from ticketlab.search.evaluators.forward import ForwardEvaluator, TrainedEvaluator
from ticketlab.search.evaluators.live import LiveEvaluator
from ticketlab.search.space import SearchSpace


def make_evaluator(model: nn.Module, weights: dict[str, torch.Tensor], space: SearchSpace, x: torch.Tensor,
                   y: torch.Tensor, *, metric: str = "accuracy", train_steps: int = 0,
                   train_config: TrainConfig | None = None, train_data: Split | None = None,
                   exact: bool = True, incremental: bool = True, kernels: str = "dense") -> Evaluator:
    """An Evaluator of masks of `space` over `model` at the checkpoint `weights` (a state_dict,
    read, never written), scored on (x, y) (on the model's device).

    The evaluator owns `model`: it may load `weights` into it and overwrite its parameters.
    With train_steps > 0 each candidate first trains that many iterations from `weights`
    under its mask, with train_config's optimiser, learning rate (constant) and batch size,
    on train_data (default: the scoring subset itself), in an order fixed by its seed, its
    Linear layers on the sparse kernels that `kernels` chooses (sparsity.kernels; the scores of
    the other evaluators never train, and are the reference's whatever `kernels` says).

    exact=False trades the bit-for-bit equality with the reference for speed where a faster
    way exists: the loss of a chain of Linear layers on the CPU is then scored by a
    search.evaluators.delta.DeltaEvaluator, and that of a unit space of a convolutional chain
    by a search.evaluators.live.LiveEvaluator (within float rounding of the reference's);
    accuracy always is (both certify their accuracies equal to the reference's); any other model gets
    the exact evaluator it gets anyway. incremental=False: a forward pass per score, keeping no
    activations (for a few scores on many images, beside a search's own evaluator).
    """
    if train_steps < 0:
        raise TicketlabError(f"train_steps is a number of iterations, at least 0; got {train_steps}")
    expected = model.state_dict()
    unfit = [key for key, value in expected.items() if key not in weights or weights[key].shape != value.shape]
    if unfit:
        raise TicketlabError(f"the checkpoint does not fit the model ({', '.join(unfit[:3])} missing or of "
                             "another shape); expected the weights of this model")
    space.to_mask(torch.ones(space.size, dtype=torch.bool)).check_fits(model)
    evaluator = _evaluator(model, weights, space, x, y, metric, train_steps, train_config, train_data, exact,
                           incremental, kernels)
    evaluator.network = (model, weights)
    return evaluator


def _evaluator(model: nn.Module, weights: dict[str, torch.Tensor], space: SearchSpace, x: torch.Tensor,
               y: torch.Tensor, metric: str, train_steps: int, train_config: TrainConfig | None,
               train_data: Split | None, exact: bool, incremental: bool, kernels: str) -> Evaluator:
    if train_steps:
        data = train_data if train_data is not None else Split(x, y)
        return TrainedEvaluator(model, weights, space, x, y, metric, train_steps, train_config or TrainConfig(), data,
                                kernels)
    stages = layer_chain(model, x.dim()) if incremental else None
    if stages is not None and is_perceptron(model, stages) and x.device.type == "cpu" and \
            (metric == "accuracy" or not exact):
        return DeltaEvaluator(model, stages, weights, space, x, y, metric)
    if stages is not None and space.granularity != "weight" and is_ungrouped(model, stages) and \
            x.device.type == "cpu" and (metric == "accuracy" or not exact):
        return LiveEvaluator(model, stages, weights, space, x, y, metric)
    if stages is not None and x.device.type == "cpu":
        return IncrementalEvaluator(model, stages, weights, space, x, y, metric)
    return ForwardEvaluator(model, weights, space, x, y, metric)


def is_perceptron(model: nn.Module, stages: list[ChainStep]) -> bool:
    """A chain of Linear layers with nothing but ReLUs between them: what delta scoring handles."""
    modules = dict(model.named_modules())
    return all(isinstance(modules[s.layer], nn.Linear) and s.norm is None for s in stages)


def is_ungrouped(model: nn.Module, stages: list[ChainStep]) -> bool:
    """No grouped convolution in the chain: what live-channel scoring handles."""
    modules = dict(model.named_modules())
    return all(getattr(modules[s.layer], "groups", 1) == 1 for s in stages)


__all__ = ["DeltaEvaluator", "LiveEvaluator", "Evaluator", "ForwardEvaluator", "IncrementalEvaluator", "TrainedEvaluator",
           "make_evaluator"]
