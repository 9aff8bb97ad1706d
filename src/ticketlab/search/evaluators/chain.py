"""The incremental evaluator: a chain of layers (models/chain.py) recomputed from the first layer a
mask changes, and there only for the units it changed (see search/evaluators/__init__.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.models.chain import ChainStep
from ticketlab.search.evaluators.base import Evaluator
from ticketlab.search.reference import objective
from ticketlab.search.space import SearchSpace
from ticketlab.sparsity.mask import Mask

# Subsets of a layer's output units are computed in multiples of 16 (the channel blocks of
# oneDNN's convolutions: a thinner one is no faster), and only at sizes where the CPU's library
# gives each unit the bits the full layer gives it: see subset_is_exact.
ROW_BLOCK = 16
_EXACT: dict[tuple, bool] = {}  # subset_is_exact's answers, for every evaluator of this process


class Scored(Protocol):
    mask: Mask


S = TypeVar("S", bound=Scored)  # a snapshot of a mask scored


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
        self.padded: dict[tuple, int] = {}  # padded_size's answers

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

    def rows_to_compute(self, rows: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor | None:
        """Indices of `rows`, padded with others to a multiple of ROW_BLOCK, and further to the
        first such size whose results on `inputs`' shapes are exact; None when that is all of them."""
        count = int(rows.sum())
        wanted = self.padded_size(count, tuple(sorted({tuple(x.shape) for x in inputs})))
        if wanted >= self.rows:
            return None
        rows = rows.clone()
        rows[(~rows).nonzero().flatten()[:wanted - count]] = True
        return rows.nonzero().flatten()

    def padded_size(self, count: int, shapes: tuple[tuple[int, ...], ...]) -> int:
        """The first multiple of ROW_BLOCK from `count` up whose subsets are exact on every one of
        `shapes` (self.rows or more if none is). Remembered per layer: a search asks it for every
        candidate."""
        start = max(ROW_BLOCK, -(-count // ROW_BLOCK) * ROW_BLOCK)
        key = (start, shapes)
        if key not in self.padded:
            wanted = start
            while wanted < self.rows and not all(self.subset_is_exact(wanted, shape) for shape in shapes):
                wanted += ROW_BLOCK
            self.padded[key] = wanted
        return self.padded[key]

    def subset_is_exact(self, count: int, shape: tuple[int, ...]) -> bool:
        """Whether the layer's product over `count` of its output units gives each of them the bits
        that the product over all units gives, on an input of `shape`.

        Not a property of arithmetic but of the CPU's library: for some shapes it takes another
        kernel, with another summation order. MKL on AVX2 did so for Linear layers of fewer than
        12 outputs; on AVX-512 it does for a 784-input layer of up to 176 outputs at batch 64 and
        above. So it is measured once per shape and process, on random numbers (two summation
        orders agree on every one of thousands of random sums only if they are the same order).
        """
        module = self.module
        conv = isinstance(module, nn.Conv2d)
        weight = self.tensors["weight"]
        key = (conv, tuple(weight.shape), "bias" in self.tensors, shape, count, weight.device,
               (module.stride, module.padding, module.dilation, module.groups) if conv else None)
        if key not in _EXACT:
            generator = torch.Generator().manual_seed(count)
            weight = torch.randn(weight.shape, generator=generator).to(weight)
            x = torch.randn(shape, generator=generator).to(weight)
            if self.stage.flatten:
                x = x.flatten(1)
            bias = torch.randn(self.rows, generator=generator).to(weight) if "bias" in self.tensors else None
            rows = torch.randperm(self.rows, generator=generator)[:count].sort().values.to(weight.device)

            def product(w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
                if conv:
                    return F.conv2d(x, w, b, module.stride, module.padding, module.dilation, module.groups)
                return F.linear(x, w, b)

            subset = product(weight[rows], None if bias is None else bias[rows])
            _EXACT[key] = torch.equal(subset, product(weight, bias).index_select(1, rows))
        return _EXACT[key]

    def masked(self, role: str, mask: Mask, rows: torch.Tensor | None) -> torch.Tensor | None:
        """The checkpoint's tensor of a role (weight, bias, norm_weight, norm_bias) under the
        mask, for the output units `rows` (None: all); None where the stage has no such tensor."""
        if role not in self.tensors:
            return None
        tensor = self.tensors[role] if rows is None else self.tensors[role][rows]
        keep = mask.get(self.names[role])
        if keep is None:
            return tensor
        return tensor * (keep if rows is None else keep[rows]).to(tensor.device)

    def forward(self, inputs: list[torch.Tensor], mask: Mask, rows: torch.Tensor | None) -> list[torch.Tensor]:
        """The stage's output on each batch, for the output units `rows` (None: all)."""
        weight, bias = self.masked("weight", mask, rows), self.masked("bias", mask, rows)
        return [self.apply(x, weight, bias, mask, rows) for x in inputs]

    def apply(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, mask: Mask,
              rows: torch.Tensor | None) -> torch.Tensor:
        """The stage on one batch, with its layer's (masked) weight and bias given, for the
        output units `rows` (None: all), as the model's forward computes it."""
        if self.stage.flatten:
            x = x.flatten(1)
        if isinstance(self.module, nn.Conv2d):
            m = self.module
            out = F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, m.groups)
        else:
            out = F.linear(x, weight, bias)
        if self.norm is not None:
            mean, var = self.running if rows is None else (self.running[0][rows], self.running[1][rows])
            scale, shift = self.masked("norm_weight", mask, rows), self.masked("norm_bias", mask, rows)
        if self.norm is not None and self.stage.norm_first:
            out = F.batch_norm(out, mean, var, scale, shift, False, 0.0, self.norm.eps)
        if self.stage.relu:
            out = F.relu(out)
        if self.norm is not None and not self.stage.norm_first:
            out = F.batch_norm(out, mean, var, scale, shift, False, 0.0, self.norm.eps)
        return out


def first_change(layers: list[ChainLayer], old: Mask, new: Mask) -> int:
    """The first stage whose output `new` changes against `old` (len(layers) if none)."""
    for k, layer in enumerate(layers):
        if any(name in new and not torch.equal(new[name], old[name]) for name in layer.names.values()):
            return k
    return len(layers)


def nearest(layers: list[ChainLayer], snapshots: list[S], mask: Mask) -> tuple[S | None, int]:
    """The snapshot (anything with a `mask`) that shares the most leading stages with `mask`,
    the most recent on a tie, and the first stage it does not share (0 with no snapshot)."""
    base, first = None, 0
    for snapshot in snapshots:  # most recent first: it wins ties
        k = first_change(layers, snapshot.mask, mask)
        if base is None or k > first:
            base, first = snapshot, k
    return base, first


@dataclass
class Snapshot:
    """A mask scored, with every stage's output on every batch under it."""

    mask: Mask
    outputs: list[list[torch.Tensor]]
    score: float


class ChainEvaluator(Evaluator):
    """An evaluator of a chain's layers that keeps what it computed for the last masks it scored."""

    KEEP = 2  # snapshots kept: a search's current mask and its latest candidate

    def __init__(self, model: nn.Module, stages: list[ChainStep], weights: dict[str, torch.Tensor],
                 space: SearchSpace, x: torch.Tensor, y: torch.Tensor, metric: str):
        super().__init__(space, x, y, metric)
        self.layers = [ChainLayer(model, stage, weights, x.device) for stage in stages]
        self.snapshots: list = []  # the latest first

    def base_for(self, mask: Mask) -> tuple[Any, int]:
        """The snapshot to compute `mask` from and the first stage to compute (`nearest`); when
        that is len(layers), the mask was scored before, and its snapshot becomes the latest."""
        base, first = nearest(self.layers, self.snapshots, mask)
        if base is not None and first == len(self.layers):
            self.snapshots = [base, *(s for s in self.snapshots if s is not base)]
        return base, first


class IncrementalEvaluator(ChainEvaluator):
    """Recomputes only what a mask changed since one of the last two masks scored (see the module doc)."""

    @torch.inference_mode()
    def _score(self, mask: Mask) -> float:
        base, first = self.base_for(mask)
        if first == len(self.layers):  # scored before
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
        rows = layer.rows_to_compute(layer.changed_rows(mask, base.mask), inputs)
        if rows is None:
            return layer.forward(inputs, mask, None)
        return [old.clone().index_copy_(1, rows.to(old.device), new)
                for old, new in zip(base.outputs[k], layer.forward(inputs, mask, rows))]

    @staticmethod
    def recompute(layer: ChainLayer, inputs: list[torch.Tensor], mask: Mask) -> list[torch.Tensor]:
        """Stage output from new inputs: only the units that can be nonzero are computed."""
        rows = layer.rows_to_compute(layer.live_rows(mask), inputs)
        if rows is None:
            return layer.forward(inputs, mask, None)
        outputs = []
        for new in layer.forward(inputs, mask, rows):
            shape = (new.shape[0], layer.rows, *new.shape[2:])
            outputs.append(new.new_zeros(shape).index_copy_(1, rows.to(new.device), new))
        return outputs
