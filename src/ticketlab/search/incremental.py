"""Delta scoring of masks of an MLP: activations updated by only what a move changes (opt-in, not exact).

`make_evaluator(..., exact=False)` returns a DeltaEvaluator for the zoo's MLPs on the CPU.
It keeps, for the last two masks scored, every layer's pre-activations z_k and activations
a_k on all scoring images, stored transposed (features x images, so that a unit is one
contiguous row). A candidate starts from the snapshot it differs from in the fewest mask
entries: in a search that is the current mask (after a rejection) or the candidate just
accepted, so the searchers need no change and no commit call (see `DeltaEvaluator.commit`).

With W_k the checkpoint's weights, m_k the masks, and the old/new input a, a' of layer k:

    z'_k = z_k + (W_k * m'_k)[:, T] @ (a' - a)[T]  +  sum over flipped entries (i, j): s_ij W_k[i, j] a[j] -> row i

where T is the set of input units whose activation changed and s = +1 for an entry the
candidate keeps and the base pruned, -1 the other way (flipped biases likewise). For
per-weight moves in LeNet-300-100 the first layer costs O(N * entries flipped) instead of
O(N * 784 * 300), the second O(N * 100 * |touched hidden neurons|), the output O(N * 100 * 10).
Only the units of z'_k that changed pass through the ReLU again. A layer where more than a
DENSE_FRACTION of the entries flipped is recomputed whole from its new input. In a weight
space the flipped entries are found on the flat keep-vectors packed 8 to an int64 word (a
nonzero over 266,200 bools costs 0.2 ms on the CPU tested, over 33,275 words 0.04 ms); the
base is the snapshot with the fewest differing words.

Not bit-identical to the reference: sums are taken in another order, so the logits differ
from a fresh forward by float rounding, growing with the number of updates chained since the
last exact forward. A snapshot `resync` (default RESYNC = 200) updates away from an exact
forward is replaced by one (the depth counts only the chain of snapshots a candidate was
built from, i.e. accepted moves in a search). Each update adds O(eps32 * |logit|) rounding,
so 200 chained updates of logits of magnitude <= 10 stay well below 1e-4 absolute
(measured: 3e-7 per weight after 400 moves, 3e-6 per neuron; tests/test_search_evaluator.py
checks < 1e-4 and loss within 1e-5 relative); accuracy can differ from the reference's only
on images whose two largest logits are within that of each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.search.evaluator import Evaluator, Stage
from ticketlab.search.reference import SCORE_BATCH, objective
from ticketlab.search.space import SearchSpace
from ticketlab.sparsity.mask import Mask

RESYNC = 200  # chained delta updates after which a snapshot is recomputed exactly
DENSE_FRACTION = 0.125  # a layer with more of its weights flipped is recomputed whole


@dataclass
class DeltaSnapshot:
    mask: Mask
    pre: list[torch.Tensor]  # z_k, features x images
    post: list[torch.Tensor]  # a_k = relu(z_k) (the last layer: the logits)
    score: float
    depth: int  # delta updates since the last exact forward
    packed: torch.Tensor | None = None  # the flat keep-vector, 8 entries a byte-word (weight spaces)


EIGHT = torch.arange(8)


def pack(keep: torch.Tensor) -> torch.Tensor:
    """A copy of a flat keep-vector as int64 words of 8 bool bytes each (zero-padded)."""
    keep = keep.to("cpu", torch.bool)
    keep = torch.cat([keep, keep.new_zeros(-len(keep) % 8)])  # a copy: the caller's vector may change
    return keep.view(torch.uint8).view(torch.int64)


class DeltaLayer:
    """One Linear layer of the chain: its checkpoint tensors and parameter names."""

    def __init__(self, module: nn.Linear, name: str, weights: dict[str, torch.Tensor], relu: bool,
                 device: torch.device):
        if not isinstance(module, nn.Linear):
            raise TicketlabError(f"{name}: delta scoring handles Linear layers only")
        self.weight_name, self.bias_name = f"{name}.weight", f"{name}.bias"
        self.weight = weights[self.weight_name].to(device)
        self.bias = weights[self.bias_name].to(device) if self.bias_name in weights else None
        self.relu = relu

    def masked(self, mask: Mask) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = self.weight * mask[self.weight_name] if self.weight_name in mask else self.weight
        bias = self.bias
        if bias is not None and self.bias_name in mask:
            bias = bias * mask[self.bias_name]
        return weight, bias


class DeltaEvaluator(Evaluator):
    """Scores masks of an MLP by updating the activations of a recent mask (see the module doc)."""

    KEEP = 2  # snapshots kept: a search's current mask and its latest candidate

    def __init__(self, model: nn.Module, stages: list[Stage], weights: dict[str, torch.Tensor], space: SearchSpace,
                 x: torch.Tensor, y: torch.Tensor, metric: str, resync: int = RESYNC):
        super().__init__(space, x, y, metric)
        if resync < 0:
            raise TicketlabError(f"resync is a number of chained updates, at least 0; got {resync}")
        modules = dict(model.named_modules())
        self.layers = [DeltaLayer(modules[s.layer], s.layer, weights, s.relu, x.device) for s in stages]
        self.inputs = x.flatten(1).t().contiguous()  # features x images
        self.labels = y
        self.resync = resync
        self.dtype = self.inputs.dtype
        # A weight space's keep-vector is the weights' masks end to end: flips are found on it directly.
        self.flat = space.granularity == "weight"
        self.starts = torch.tensor([layer.slice.start for layer in space.layers] + [space.size])
        self.snapshots: list[DeltaSnapshot] = []
        self.exact_forwards = 0  # how many scores were full forward passes

    def commit(self, keep: torch.Tensor) -> None:
        """Optional hint that `keep` became the search's current mask: the next candidates are
        built from its state. Not needed (the base is found by counting flipped entries); it
        only moves that snapshot to the front."""
        mask = self.space.to_mask(keep)
        for snapshot in self.snapshots:
            if all(torch.equal(mask[n], snapshot.mask[n]) for n in mask):
                self.snapshots = [snapshot, *(s for s in self.snapshots if s is not snapshot)]
                return

    def score(self, keep: torch.Tensor) -> float:
        mask = self.space.to_mask(keep)
        self.evaluations += 1
        packed = pack(keep) if self.flat else None
        with torch.inference_mode():
            best, flips, fewest = None, None, None
            for snapshot in self.snapshots:  # most recent first: it wins ties
                if self.flat:  # differing words of 8 entries: enough to choose the base
                    found, count = None, int(torch.count_nonzero(packed ^ snapshot.packed))
                else:
                    found = self.mask_flips(mask, snapshot.mask)
                    count = sum(len(local) for local, _ in found.values())
                if fewest is None or count < fewest:
                    best, flips, fewest = snapshot, found, count
            if self.flat and best is not None:
                flips = self.flat_flips(packed, best.packed)
            if best is not None and fewest == 0:
                self.snapshots = [best, *(s for s in self.snapshots if s is not best)]
                return best.score
            if best is None or best.depth + 1 > self.resync:
                snapshot = self.full(mask)
            else:
                snapshot = self.update(mask, best, flips)
            snapshot.packed = packed
            self.snapshots = [snapshot, *([best] if best is not None else [])][:self.KEEP]
            return snapshot.score

    def _score(self, mask: Mask) -> float:
        raise NotImplementedError  # score() is overridden

    def flat_flips(self, new: torch.Tensor, old: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per parameter, the flat indices of the entries two packed keep-vectors (of a weight
        space) disagree on, and +1/-1 where the new one keeps/prunes them."""
        words = new ^ old
        changed = words.nonzero().flatten()
        if not len(changed):
            return {}
        positions = (changed[:, None] * 8 + EIGHT).flatten()
        positions = positions[words.view(torch.uint8).index_select(0, positions) != 0]
        signs = new.view(torch.uint8).index_select(0, positions).to(self.dtype) * 2 - 1
        bounds = torch.searchsorted(positions, self.starts).tolist()
        return {layer.name: (positions[a:b] - layer.slice.start, signs[a:b])
                for layer, a, b in zip(self.space.layers, bounds, bounds[1:]) if b > a}

    def mask_flips(self, mask: Mask, base: Mask) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The same from two Masks."""
        flips = {}
        for name, keep in mask.items():
            local = (keep ^ base[name]).flatten().nonzero().flatten()
            if len(local):
                flips[name] = (local, keep.flatten().index_select(0, local).to(self.dtype) * 2 - 1)
        return flips

    def finish(self, mask: Mask, pre: list[torch.Tensor], post: list[torch.Tensor], depth: int) -> DeltaSnapshot:
        if self.metric == "accuracy":  # max over classes returns the first maximal index, as argmax does
            score = int((post[-1].max(0).indices == self.labels).sum()) / len(self.labels)
        else:
            logits = post[-1].t()
            score = objective(zip(logits.split(SCORE_BATCH), self.labels.split(SCORE_BATCH)), self.metric)
        return DeltaSnapshot(mask, pre, post, score, depth)

    def full(self, mask: Mask) -> DeltaSnapshot:
        """An exact forward pass, as the reference computes it (in batches of SCORE_BATCH)."""
        self.exact_forwards += 1
        a = self.inputs.t()
        pre, post = [], []
        for layer in self.layers:
            weight, bias = layer.masked(mask)
            z = torch.cat([F.linear(batch, weight, bias) for batch in a.split(SCORE_BATCH)])
            a = F.relu(z) if layer.relu else z
            pre.append(z.t().contiguous())
            post.append(a.t().contiguous() if layer.relu else pre[-1])
        return self.finish(mask, pre, post, 0)

    def update(self, mask: Mask, base: DeltaSnapshot,
               flips: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> DeltaSnapshot:
        """The base's activations moved by the flipped entries (see the module doc)."""
        old_in, new_in = self.inputs, self.inputs
        rows_in, delta_in = None, None  # input units whose activation changed, and by how much
        pre, post = [], []
        for k, layer in enumerate(self.layers):
            z_old, a_old = base.pre[k], base.post[k]
            weight_flips, bias_flips = flips.get(layer.weight_name), flips.get(layer.bias_name)
            if weight_flips is not None and len(weight_flips[0]) > DENSE_FRACTION * layer.weight.numel():
                weight, bias = layer.masked(mask)
                z = torch.addmm(bias[:, None], weight, new_in) if bias is not None else weight @ new_in
                rows = None
            else:
                z, rows = z_old, []
                if rows_in is not None and len(rows_in):
                    columns = layer.weight.index_select(1, rows_in)
                    keep = mask.get(layer.weight_name)
                    if keep is not None:
                        columns = columns * keep.index_select(1, rows_in)
                    z = torch.addmm(z, columns, delta_in)
                    rows = None  # every output unit may have changed
                if weight_flips is not None:
                    local, signs = weight_flips
                    i, j = local // layer.weight.shape[1], local % layer.weight.shape[1]
                    source = old_in.index_select(0, j) * (layer.weight.flatten().index_select(0, local) * signs)[:, None]
                    z = z.index_add(0, i, source) if z is z_old else z.index_add_(0, i, source)
                    if rows is not None:
                        rows.append(i)
                if bias_flips is not None and layer.bias is not None:
                    i, signs = bias_flips
                    source = (layer.bias.index_select(0, i) * signs)[:, None].expand(-1, z.shape[1])
                    z = z.index_add(0, i, source) if z is z_old else z.index_add_(0, i, source)
                    if rows is not None:
                        rows.append(i)
                if rows is not None:
                    rows = torch.cat(rows).unique() if rows else torch.zeros(0, dtype=torch.long)
            if not layer.relu:
                a, delta = z, None
            elif rows is None:
                a = F.relu(z)
                delta = a - a_old
                rows = torch.arange(z.shape[0])
            else:
                fresh = F.relu(z.index_select(0, rows))
                delta = fresh - a_old.index_select(0, rows)
                a = a_old.index_copy(0, rows, fresh) if len(rows) else a_old
            pre.append(z)
            post.append(a)
            old_in, new_in = a_old, a
            rows_in, delta_in = rows, delta
        return self.finish(mask, pre, post, base.depth + 1)
