"""Delta scoring of masks of an MLP: activations updated by only what a move changes.

`make_evaluator` returns a DeltaEvaluator for MLPs (chains of Linear layers and ReLUs,
models/chain.py) on the CPU when the objective is accuracy (always) or loss with
exact=False. It keeps, for the last two masks scored,
every layer's pre-activations z_k and activations a_k on all scoring images, stored
transposed (features x images, so that a unit is one contiguous row). A candidate starts
from the snapshot it differs from in the fewest mask entries: in a search that is the
current mask (after a rejection) or the candidate just accepted, so the searchers need no
change.

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

The two snapshots live in two preallocated Slots; a new one is written into the slot of
the snapshot it evicts. The slots differ only in the rows the last update changed
(`differ`), so a layer updated in a few rows first copies just those rows over from the
base instead of the whole layer (copying z_1 and a_1 of LeNet whole, 2 x 1.2 MB, took a
fifth of a score).

Rounding: sums are taken in another order than a fresh forward's, so the logits differ
from it by float rounding, growing with the number of updates chained since the last exact
forward. Rounding is relative to the size of what is summed, so it is measured against a
chain's scale: the largest |logit| of any mask from its exact forward on (a chain from a
mask whose logits are all 0, a network the mask cut off, to one whose logits are not must
not certify against the first mask's zero). A snapshot `resync` (default RESYNC = 200)
updates away from an exact forward is replaced by one; at that moment the drift of the
chain is measured (the updated logits against the exact ones of the same mask, relative to
the scale), and the resync interval halves if it ever exceeds TOLERANCE / 4. Measured: 3e-7
per weight after 400 moves, 3e-6 per neuron.

Accuracy is nonetheless the reference's, exactly, by search.evaluators.certificate: an
image's prediction can differ from the reference's only if its two largest delta logits are
within 2 * TOLERANCE * scale of each other (each logit is within TOLERANCE * scale of the
reference's), and such images are predicted again by an exact forward pass (every image,
where every logit on the chain was 0). The loss has no such certificate:
with exact=True a loss objective gets the bit-exact
search.evaluators.chain.IncrementalEvaluator instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.models.chain import ChainStep
from ticketlab.search.evaluators.base import Evaluator
from ticketlab.search.evaluators.certificate import TOLERANCE, certified_accuracy
from ticketlab.search.moves import Move
from ticketlab.search.reference import SCORE_BATCH, objective
from ticketlab.search.space import SearchSpace
from ticketlab.sparsity.mask import Mask

RESYNC = 200  # chained delta updates after which a snapshot is recomputed exactly
DENSE_FRACTION = 0.125  # a layer with more of its weights flipped is recomputed whole
FRESH_FRACTION = 0.5  # ... and one with more of its inputs changed

Flips = dict[str, tuple[torch.Tensor, torch.Tensor]]  # parameter -> flat indices flipped, +1 kept / -1 pruned


@dataclass
class Slot:
    """Every layer's z_k and a_k on all scoring images (the last layer's a is its z)."""

    pre: list[torch.Tensor]
    post: list[torch.Tensor]


@dataclass
class DeltaSnapshot:
    mask: Mask
    slot: Slot
    score: float
    depth: int  # delta updates since the last exact forward
    scale: float  # the largest |logit| of the masks its chain of updates passed, from that exact forward on
    packed: torch.Tensor | None = None  # the flat keep-vector, 8 entries a byte-word (weight spaces)
    source: torch.Tensor | None = None  # the keep-vector scored, as the caller passed it (what a Move's base names)


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

    def __init__(self, model: nn.Module, stages: list[ChainStep], weights: dict[str, torch.Tensor], space: SearchSpace,
                 x: torch.Tensor, y: torch.Tensor, metric: str, resync: int = RESYNC):
        super().__init__(space, x, y, metric)
        if resync < 0:
            raise TicketlabError(f"resync is a number of chained updates, at least 0; got {resync}")
        modules = dict(model.named_modules())
        self.layers = [DeltaLayer(modules[s.layer], s.layer, weights, s.relu, x.device) for s in stages]
        self.images = x.flatten(1)  # images x features, batched as the reference batches them
        self.inputs = self.images.t().contiguous()  # features x images
        self.labels = y
        self.resync = resync
        self.dtype = self.inputs.dtype
        # A weight space's keep-vector is the weights' masks end to end: flips are found on it directly.
        self.flat = space.granularity == "weight"
        self.starts = torch.tensor([layer.slice.start for layer in space.layers] + [space.size])
        self.slots = [self.new_slot(), self.new_slot()]
        self.differ: list[torch.Tensor | None] = [None] * len(self.layers)  # rows where the slots may differ
        self.snapshots: list[DeltaSnapshot] = []  # the latest first; at most one per slot
        self.exact_forwards = 0  # how many scores were full forward passes
        self.recounted_images = 0  # near-tied images predicted again exactly
        self.drift = 0.0  # the largest logit drift measured at a resync, relative to its chain's scale

    def new_slot(self) -> Slot:
        n = self.inputs.shape[1]
        pre = [self.inputs.new_empty(layer.weight.shape[0], n) for layer in self.layers]
        post = [self.inputs.new_empty(z.shape) if layer.relu else z for z, layer in zip(pre, self.layers)]
        return Slot(pre, post)

    def score(self, keep: torch.Tensor, move: Move | None = None) -> float:
        mask = self.space.to_mask(keep)
        self.evaluations += 1
        with torch.inference_mode():
            best, flips, packed = self.hinted(keep, mask, move) if move is not None else (None, None, None)
            if best is None:
                best, flips, packed = self.nearest(keep, mask)
            if best is not None and not flips:
                self.snapshots = [best, *(s for s in self.snapshots if s is not best)]
                return best.score
            slot = self.slots[1] if best is not None and best.slot is self.slots[0] else self.slots[0]
            if best is None:
                snapshot = self.full(mask, slot)
            elif best.depth + 1 > self.resync:
                snapshot = self.resynchronise(mask, best, flips, slot)
            else:
                self.update(mask, best, flips, slot)
                scale = self.chain_scale(best, slot)
                snapshot = DeltaSnapshot(mask, slot, self.certified_score(mask, slot, scale), best.depth + 1, scale)
            snapshot.packed, snapshot.source = packed, keep
            self.snapshots = [snapshot, *([best] if best is not None else [])]
            return snapshot.score

    def nearest(self, keep: torch.Tensor, mask: Mask) -> tuple[DeltaSnapshot | None, Flips | None, torch.Tensor | None]:
        """The snapshot `keep` differs from in the fewest entries (None: there is none yet), the
        flips from it, and the packed keep-vector (weight spaces)."""
        packed = pack(keep) if self.flat else None
        best, flips, fewest = None, None, None
        for snapshot in self.snapshots:  # most recent first: it wins ties
            if self.flat:  # differing words of 8 entries: enough to choose the base
                found = packed ^ snapshot.packed
                count = int(torch.count_nonzero(found))
            else:
                found = self.mask_flips(mask, snapshot.mask)
                count = sum(len(local) for local, _ in found.values())
            if fewest is None or count < fewest:
                best, flips, fewest = snapshot, found, count
        if self.flat and best is not None:
            flips = self.flat_flips(flips, packed) if fewest else {}
        return best, flips, packed

    def hinted(self, keep: torch.Tensor, mask: Mask,
               move: Move) -> tuple[DeltaSnapshot | None, Flips | None, torch.Tensor | None]:
        """The same from a searcher's hint, when its base is a snapshot's (None otherwise)."""
        base = next((s for s in self.snapshots if s.source is move.base), None)
        if base is None:
            return None, None, None
        if not self.flat:  # a unit space: its masks are compared per parameter, as without a hint
            return base, self.mask_flips(mask, base.mask), None
        positions = move.flipped.sort().values
        packed = base.packed.clone()
        packed.view(torch.uint8)[positions] ^= 1  # a bool byte is 0 or 1
        signs = keep.index_select(0, positions).to(self.dtype) * 2 - 1
        return base, self.split_flips(positions, signs), packed

    def _score(self, mask: Mask) -> float:
        raise NotImplementedError  # score() is overridden

    def flat_flips(self, words: torch.Tensor, new: torch.Tensor) -> Flips:
        """Per parameter, the flat indices of the entries two packed keep-vectors (of a weight
        space) disagree on, and +1/-1 where the new one keeps/prunes them, from their xor."""
        changed = words.nonzero().flatten()
        positions = (changed[:, None] * 8 + EIGHT).flatten()
        positions = positions[words.view(torch.uint8).index_select(0, positions) != 0]
        signs = new.view(torch.uint8).index_select(0, positions).to(self.dtype) * 2 - 1
        return self.split_flips(positions, signs)

    def split_flips(self, positions: torch.Tensor, signs: torch.Tensor) -> Flips:
        """Sorted flat positions of a weight space's keep-vector, and their signs, per parameter."""
        bounds = torch.searchsorted(positions, self.starts).tolist()
        return {layer.name: (positions[a:b] - layer.slice.start, signs[a:b])
                for layer, a, b in zip(self.space.layers, bounds, bounds[1:]) if b > a}

    def mask_flips(self, mask: Mask, base: Mask) -> Flips:
        """The same from two Masks."""
        flips = {}
        for name, keep in mask.items():
            local = (keep ^ base[name]).flatten().nonzero().flatten()
            if len(local):
                flips[name] = (local, keep.flatten().index_select(0, local).to(self.dtype) * 2 - 1)
        return flips

    # --- exact forward passes, as the reference computes them ------------------------------

    def exact_layers(self, weights: list[tuple[torch.Tensor, torch.Tensor | None]],
                     images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every layer's z and a (images x units) under the masked `weights`, as F.linear in
        the model's forward gives them."""
        pre, post, a = [], [], images
        for layer, (weight, bias) in zip(self.layers, weights):
            pre.append(F.linear(a, weight, bias))
            a = F.relu(pre[-1]) if layer.relu else pre[-1]
            post.append(a)
        return pre, post

    def full(self, mask: Mask, slot: Slot) -> DeltaSnapshot:
        """An exact forward pass into `slot`, batch by batch as the reference computes it."""
        self.exact_forwards += 1
        weights = [layer.masked(mask) for layer in self.layers]
        batches = [self.exact_layers(weights, batch) for batch in self.images.split(SCORE_BATCH)]
        for k in range(len(self.layers)):
            slot.pre[k].copy_(torch.cat([pre[k] for pre, _ in batches]).t())
            if self.layers[k].relu:
                slot.post[k].copy_(torch.cat([post[k] for _, post in batches]).t())
        self.differ = [None] * len(self.layers)
        logits = [post[-1] for _, post in batches]
        return DeltaSnapshot(mask, slot, objective(zip(logits, self.labels.split(SCORE_BATCH)), self.metric), 0,
                             float(slot.post[-1].abs().max()))

    def resynchronise(self, mask: Mask, base: DeltaSnapshot, flips: Flips, slot: Slot) -> DeltaSnapshot:
        """An exact forward instead of the update that would chain too long; the update is also
        computed, to measure how far its logits drifted."""
        self.update(mask, base, flips, slot)
        chained, scale = slot.post[-1].clone(), self.chain_scale(base, slot)
        snapshot = self.full(mask, slot)
        # Relative to the scale the chain's certificate used; 0 only if every logit on it was 0.
        scale = max(scale, snapshot.scale)
        drift = float((chained - slot.post[-1]).abs().max()) / scale if scale > 0 else 0.0
        self.drift = max(self.drift, drift)
        if drift > TOLERANCE / 4:  # the certificate's margin is getting thin: chain less
            self.resync = max(1, self.resync // 2)
        return snapshot

    # --- scores of updated activations -----------------------------------------------------

    def chain_scale(self, base: DeltaSnapshot, slot: Slot) -> float:
        """The scale of the chain that `slot`'s logits, updated from `base`, extend (DeltaSnapshot.scale)."""
        return max(base.scale, float(slot.post[-1].abs().max()))

    def certified_score(self, mask: Mask, slot: Slot, scale: float) -> float:
        """The score of the updated logits; for accuracy the reference's exactly (see the module doc),
        certified with TOLERANCE relative to `scale`, the chain's largest |logit|."""
        logits = slot.post[-1].t()
        if self.metric != "accuracy":
            return objective(zip(logits.split(SCORE_BATCH), self.labels.split(SCORE_BATCH)), self.metric)
        masked = functools.cache(lambda: [layer.masked(mask) for layer in self.layers])  # only if some are near-tied
        accuracy, recounted = certified_accuracy(
            logits, self.labels, TOLERANCE * scale,
            lambda start, end: self.exact_layers(masked(), self.images[start:end])[1][-1])
        self.recounted_images += recounted
        return accuracy

    def update(self, mask: Mask, base: DeltaSnapshot, flips: Flips, slot: Slot) -> None:
        """Write into `slot` the base's activations moved by the flipped entries (see the module doc)."""
        old, new = base.slot, slot
        old_in, new_in = self.inputs, self.inputs
        rows_in, delta_in = None, None  # input units whose activation changed, and by how much
        for k, layer in enumerate(self.layers):
            z, a = new.pre[k], new.post[k]
            weight_flips, bias_flips = flips.get(layer.weight_name), flips.get(layer.bias_name)
            rows: torch.Tensor | None  # the rows of z that changed (None: any)
            if self.recomputed(k, flips, rows_in):
                weight, bias = layer.masked(mask)
                if bias is not None:
                    torch.addmm(bias[:, None], weight, new_in, out=z)
                else:
                    torch.mm(weight, new_in, out=z)
                rows = None
            else:
                if rows_in is not None:  # every output unit may change
                    columns = layer.weight.index_select(1, rows_in)
                    keep = mask.get(layer.weight_name)
                    if keep is not None:
                        columns = columns * keep.index_select(1, rows_in)
                    torch.addmm(old.pre[k], columns, delta_in, out=z)
                    rows = None
                else:  # only flipped rows change: bring the slot level with the base elsewhere first
                    self.copy_rows(old, new, k)
                    rows = torch.zeros(0, dtype=torch.long)
                if weight_flips is not None:
                    local, signs = weight_flips
                    i, j = local // layer.weight.shape[1], local % layer.weight.shape[1]
                    source = old_in.index_select(0, j) * (layer.weight.flatten().index_select(0, local) * signs)[:, None]
                    z.index_add_(0, i, source)
                    rows = None if rows is None else torch.cat([rows, i])
                if bias_flips is not None and layer.bias is not None:
                    i, signs = bias_flips
                    z.index_add_(0, i, (layer.bias.index_select(0, i) * signs)[:, None].expand(-1, z.shape[1]))
                    rows = None if rows is None else torch.cat([rows, i])
                if rows is not None:
                    rows = rows.unique()
            self.differ[k] = rows
            if not layer.relu:
                break
            # The next layer takes the change of this one's activations only if it is not recomputed whole.
            wants_delta = not self.recomputed(k + 1, flips, rows)
            if rows is None:
                torch.clamp_min(z, 0, out=a)  # relu has no out=; clamp_min(0) is what it computes
                delta = a - old.post[k] if wants_delta else None
                rows = torch.arange(z.shape[0])
            else:
                fresh = F.relu(z.index_select(0, rows))
                delta = fresh - old.post[k].index_select(0, rows) if wants_delta else None
                a.index_copy_(0, rows, fresh)
            old_in, new_in = old.post[k], a
            rows_in, delta_in = rows, delta

    def recomputed(self, k: int, flips: Flips, rows_in: torch.Tensor | None) -> bool:
        """Whether layer k is computed whole from its new input rather than updated: when more
        than a DENSE_FRACTION of its weights flipped, or more than FRESH_FRACTION of its inputs
        changed (a rank-|changed| update then costs about as much, plus the inputs' change).
        rows_in: the input units that changed (None for layer 0, whose input never does)."""
        layer = self.layers[k]
        weight_flips = flips.get(layer.weight_name)
        if weight_flips is not None and len(weight_flips[0]) > DENSE_FRACTION * layer.weight.numel():
            return True
        return rows_in is not None and k > 0 and len(rows_in) > FRESH_FRACTION * layer.weight.shape[1]

    def copy_rows(self, source: Slot, target: Slot, k: int) -> None:
        """Make layer k of `target` equal to the source's, copying only the rows they may differ in."""
        rows = self.differ[k]
        tensors = [(source.pre[k], target.pre[k])]
        if self.layers[k].relu:
            tensors.append((source.post[k], target.post[k]))
        for a, b in tensors:
            if rows is None:
                b.copy_(a)
            elif len(rows):
                b.index_copy_(0, rows, a.index_select(0, rows))
