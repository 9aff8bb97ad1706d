"""Live-channel scoring of unit masks of a convolutional chain: every layer computed over the
units that can be nonzero only, on its input's live units only.

`make_evaluator` returns a LiveEvaluator for a unit (filter) space of a chain with
convolutions (models/chain.py: BasicCNN, a user's own such model) on the CPU, when the
objective is accuracy (always) or the loss with exact=False. A pruned filter outputs exact
zeros (its weights, bias and BatchNorm scale and shift all pruned), so the next layer's sum
over it adds nothing: leaving it out of both the layer's outputs and the next layer's inputs
changes no number but the order of the remaining sums. At 70% of BasicCNN's filters pruned a
layer keeps about 30% of its inputs and 30% of its outputs, 9% of its multiplications. Each
snapshot (the last two masks scored) holds every stage's output on its live units only; a
candidate starts from the one it shares the most layers with, reuses the layers before the
first one its mask changes, and computes the rest.

Sums in another order round differently: the logits are within float rounding of the
reference's, not its bits. The accuracy is the reference's exactly by
search.evaluators.certificate (near-tied images predicted again by the exact forward pass),
with a tolerance of `relative` times the largest |logit|. That rounding is measured: the
first score, and every CHECK_EVERY-th after it, is also computed exactly (and that exact
score returned); `drift` is the largest difference seen, relative to the largest |logit|,
and the tolerance widens to 4 times it if it ever comes within a factor 4 of it. Measured on
BasicCNN at 70%: below 1e-6, against the 1e-5 of TOLERANCE. The loss has no certificate: with
exact=True a loss objective gets the bit-exact search.evaluators.chain.IncrementalEvaluator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ticketlab.models.chain import ChainStep
from ticketlab.search.evaluators.certificate import TOLERANCE, certified_accuracy
from ticketlab.search.evaluators.chain import ChainEvaluator, ChainLayer
from ticketlab.search.reference import SCORE_BATCH, objective
from ticketlab.search.space import SearchSpace
from ticketlab.sparsity.mask import Mask

CHECK_EVERY = 200  # scores between exact forwards that measure the rounding


@dataclass
class LiveSnapshot:
    """A mask scored, with each stage's live output units and its output on them, batch by batch."""

    mask: Mask
    live: list[torch.Tensor]
    outputs: list[list[torch.Tensor]]
    score: float


def live_units(layer: ChainLayer, mask: Mask) -> torch.Tensor:
    """Indices of the stage's output units that can be nonzero (at least one: a stage of none
    is computed for its first unit, which is then exact zeros)."""
    live = layer.live_rows(mask).nonzero().flatten()
    return live if len(live) else torch.zeros(1, dtype=torch.long)


def on_inputs(layer: ChainLayer, weight: torch.Tensor, live_in: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The layer's weight restricted to the live input units (None: all) that `x` (a batch of
    the previous stage's live outputs) holds."""
    if live_in is None:
        return weight
    if layer.stage.flatten and x.dim() > 2:  # a Linear layer reading a flattened map: blocks of columns per unit
        per_unit = x.shape[2:].numel()
        blocks = weight.reshape(weight.shape[0], -1, per_unit).index_select(1, live_in)
        return blocks.reshape(weight.shape[0], -1)
    weight = weight.index_select(1, live_in)
    return weight.contiguous(memory_format=torch.channels_last) if weight.dim() == 4 else weight


class LiveEvaluator(ChainEvaluator):
    """Scores unit masks of a chain over live units only (see the module doc)."""

    def __init__(self, model: nn.Module, stages: list[ChainStep], weights: dict[str, torch.Tensor],
                 space: SearchSpace, x: torch.Tensor, y: torch.Tensor, metric: str):
        super().__init__(model, stages, weights, space, x, y, metric)
        self.images, self.labels = x, y
        # Channels-last maps: oneDNN's convolutions of a few hundred channels ran 1.35x faster so.
        self.inputs = [xb.contiguous(memory_format=torch.channels_last) if xb.dim() == 4 else xb
                       for xb, _ in self.batches]
        self.relative = TOLERANCE  # the certificate's tolerance, relative to the largest |logit|
        self.drift = 0.0  # the largest rounding measured, relative to the largest |logit|
        self.computed = 0  # scores computed (not found among the snapshots)
        self.exact_forwards = 0
        self.recounted_images = 0

    @torch.inference_mode()
    def _score(self, mask: Mask) -> float:
        base, first = self.base_for(mask)
        if first == len(self.layers):  # scored before
            return base.score
        live = list(base.live[:first]) if base is not None else []
        outputs = list(base.outputs[:first]) if base is not None else []
        inputs = outputs[-1] if outputs else self.inputs
        live_in = live[-1] if live else None
        for layer in self.layers[first:]:
            live_out = live_units(layer, mask)
            inputs = self.compute(layer, inputs, live_in, live_out, mask)
            live.append(live_out)
            outputs.append(inputs)
            live_in = live_out
        logits = self.full_width(torch.cat(outputs[-1]), live[-1])
        score = self.certified_score(mask, logits)
        self.snapshots = [LiveSnapshot(mask, live, outputs, score), *([base] if base is not None else [])][:self.KEEP]
        return score

    @staticmethod
    def compute(layer: ChainLayer, inputs: list[torch.Tensor], live_in: torch.Tensor | None, units: torch.Tensor,
                mask: Mask) -> list[torch.Tensor]:
        """The stage's output on its `units`, from inputs on the previous stage's live units `live_in`."""
        weight, bias = layer.masked("weight", mask, units), layer.masked("bias", mask, units)
        return [layer.apply(x, on_inputs(layer, weight, live_in, x), bias, mask, units) for x in inputs]

    def full_width(self, logits: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """Logits on every output unit (a dead one outputs exact zeros)."""
        rows = self.layers[-1].rows
        if len(live) == rows:
            return logits
        return logits.new_zeros(len(logits), rows).index_copy_(1, live, logits)

    def exact_logits(self, mask: Mask, images: torch.Tensor) -> torch.Tensor:
        """The logits of images, computed as the reference computes them."""
        outputs = [images]
        for layer in self.layers:
            outputs = layer.forward(outputs, mask, None)
        return outputs[0]

    def certified_score(self, mask: Mask, logits: torch.Tensor) -> float:
        """The score of the live logits; for accuracy the reference's exactly (see the module doc).
        Every CHECK_EVERY-th score is computed exactly as well, to measure the rounding."""
        self.computed += 1
        if (self.computed - 1) % CHECK_EVERY == 0:
            self.exact_forwards += 1
            exact = [self.exact_logits(mask, xb) for xb, _ in self.batches]
            whole = torch.cat(exact)
            drift = float((logits - whole).abs().max()) / max(float(whole.abs().max()), 1e-30)
            self.drift = max(self.drift, drift)
            if self.drift > self.relative / 4:  # the certificate's margin is getting thin: widen it
                self.relative = 4 * self.drift
            return objective(zip(exact, self.labels.split(SCORE_BATCH)), self.metric)
        if self.metric != "accuracy":
            return objective(zip(logits.split(SCORE_BATCH), self.labels.split(SCORE_BATCH)), self.metric)
        tolerance = self.relative * float(logits.abs().max())
        accuracy, recounted = certified_accuracy(
            logits, self.labels, tolerance, lambda start, end: self.exact_logits(mask, self.images[start:end]))
        self.recounted_images += recounted
        return accuracy

__all__ = ["CHECK_EVERY", "LiveEvaluator"]
