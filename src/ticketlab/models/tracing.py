"""Channel groups derived from any nn.Module by tracing its graph (torch.fx), so that structured
pruning and surgery need no hand-written declaration.

Every output channel of a Linear or Conv2d is a *slot*; so is every channel of a BatchNorm and
every input column of a Linear or Conv2d. Following each tensor's channel dimension (dim 1)
through the traced graph, slots that must go together are joined (union-find):

- a BatchNorm channel with the channel it reads;
- the channels an addition, subtraction or multiplication combines (a residual stream);
- a grouped conv's input and output channels of one group (a depthwise conv's channel with the
  channel it reads), so that groups are cut whole and stay of equal widths;
- a layer's input column with every channel that reaches it (a layer used twice reads two);
- concatenation, channel slicing, zero padding of channels (a padded shortcut) and flattening
  into a Linear (each channel a block of H*W columns) move channels without joining them.

A channel that reaches the model's output, comes from its input, or passes through an operation
this does not model (one that maps zero to non-zero, such as a sigmoid, or that mixes channels
otherwise) is pinned: its slots are never pruned. Joined slots form units; units touching the
same layers, at indices that step together, form one ChannelGroup (models/structure.py). Surgery
checks every shrunk network against the masked one, so a rule wrong here is caught there.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ticketlab.config import TicketlabError
from ticketlab.models.structure import ChannelGroup, Slice

Slot = tuple[str, str, int]  # (module, "out" | "in", index)
Channels = list[int | None]  # per channel of a tensor's dim 1: its unit (a slot id), or None for a zero channel

ZERO_PRESERVING_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardswish,
                           nn.Hardtanh, nn.Mish, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
                           nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample)
ZERO_PRESERVING_FUNCTIONS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardtanh, F.mish,
                             F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                             F.interpolate, F.tanh, torch.relu, torch.tanh}
ZERO_PRESERVING_METHODS = {"relu", "tanh", "contiguous", "clone", "detach", "to", "float", "double", "half"}
COMBINING = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul, torch.add,
             torch.sub, torch.mul, "add", "add_", "sub", "sub_", "mul", "mul_"}
REDUCTIONS = {"mean", "sum", "amax", "amin"}  # not max and min: with a dim they give pairs
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class TraceError(TicketlabError):
    """A model whose graph cannot be traced, so its channel groups cannot be derived."""


@dataclass(frozen=True)
class ChannelPad:
    """Zero channels that `module`'s forward pads a tensor with: `lo` before its channels, `hi`
    after. `sides` names, for each padded channel before and after, one layer output of the unit
    it was joined with (a residual add joins it to the block's output), or None where it is never
    cut; surgery keeps as many padded channels on each side as those units keep."""

    module: str  # "" for the model itself
    lo: int
    hi: int
    sides: tuple[tuple[Slot | None, ...], tuple[Slot | None, ...]]


class _Units:
    """Union-find over slots, with the pinned ones and the channel pads met."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.slots: list[Slot | None] = []  # None: a channel that is no layer's (the model's input, a pad)
        self.ids: dict[Slot, int] = {}
        self.pinned: set[int] = set()
        self.pads: list[tuple[str, list[int], list[int]]] = []  # (module, ids of the lo and hi channels)

    def slot(self, slot: Slot | None) -> int:
        if slot is not None and slot in self.ids:
            return self.ids[slot]
        self.parent.append(len(self.parent))
        self.slots.append(slot)
        if slot is not None:
            self.ids[slot] = len(self.parent) - 1
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int | None, b: int | None) -> int | None:
        if a is None or b is None:
            return b if a is None else a
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
        return ra

    def pin(self, channels: Channels) -> None:
        self.pinned.update(c for c in channels if c is not None)


def derive_groups(model: nn.Module, example: torch.Tensor) -> list[ChannelGroup]:
    """The channel groups of `model` traced on `example` (one batch of its input), in the order of
    their first layer; raises TraceError (one line) where tracing cannot follow the model."""
    return derive(model, example)[0]


def derive(model: nn.Module, example: torch.Tensor) -> tuple[list[ChannelGroup], list[ChannelPad]]:
    """The channel groups of `model` traced on `example`, and the channel pads its forward makes."""
    try:
        graph = fx.symbolic_trace(model)
    except Exception as error:  # torch.fx raises many kinds; all mean the same to the user
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TraceError(f"cannot trace {type(model).__name__} to find its channel groups ({first[:160]}); "
                         "declare channel_groups() on it or use the torch-pruning backend "
                         "(--backend torch-pruning)") from None
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(graph).propagate(example)
    finally:
        model.train(training)
    units = _Units()
    modules = dict(model.named_modules())
    channels: dict[fx.Node, Channels | None] = {}
    for node in graph.graph.nodes:
        channels[node] = _channels_of(node, channels, units, modules)
    return _groups(units, modules), _pads(units)


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [arg for arg in node.all_input_nodes if _shape(arg) is not None]


def _fresh_pinned(node: fx.Node, units: _Units) -> Channels | None:
    shape = _shape(node)
    if shape is None or len(shape) < 2:
        return None
    fresh: Channels = [units.slot(None) for _ in range(shape[1])]
    units.pin(fresh)
    return fresh


def _channels_of(node: fx.Node, channels: dict[fx.Node, Channels | None], units: _Units,
                 modules: dict[str, nn.Module]) -> Channels | None:
    """The units of each channel of the node's output; joins and pins as the node requires."""
    if node.op in ("placeholder", "get_attr"):  # the model's input, or a tensor it holds
        return _fresh_pinned(node, units)
    if node.op == "output":
        for arg in node.all_input_nodes:
            units.pin(channels.get(arg) or [])
        return None
    inputs = [channels.get(arg) for arg in _tensor_inputs(node)]
    rule = _module_rule(node, modules) if node.op == "call_module" else _function_rule(node)
    if rule is not None:
        result = rule(node, inputs, units)
        shape = _shape(node)
        # A rule's channels must be the output's: anything else (a pair of outputs, say) is not modelled.
        if result is None or (result is not NotImplemented and shape is not None and len(shape) >= 2
                              and shape[1] == len(result)):
            return result
    for known in inputs:  # an operation not modelled: what flows into it stays
        units.pin(known or [])
    return _fresh_pinned(node, units)


Rule = Callable[[fx.Node, list[Channels | None], _Units], Any]


def _module_rule(node: fx.Node, modules: dict[str, nn.Module]) -> Rule | None:
    module, name = modules[str(node.target)], str(node.target)
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        return lambda n, inputs, units: _layer(name, module, n, inputs, units)
    if isinstance(module, NORMS):
        return lambda n, inputs, units: _per_channel(name, inputs, units)
    if isinstance(module, ZERO_PRESERVING_MODULES):
        return _same
    if isinstance(module, nn.Flatten):
        return lambda n, inputs, units: _flatten(n, inputs) if module.start_dim == 1 else NotImplemented
    return None


def _function_rule(node: fx.Node) -> Rule | None:
    target = node.target
    if node.op == "call_method":
        if target in ZERO_PRESERVING_METHODS:
            return _same
        if target in ("flatten", "view", "reshape"):
            return lambda n, inputs, units: _flatten(n, inputs)
        if target in REDUCTIONS:
            return _reduction
        if target in COMBINING:
            return _combine
        if target in ("size", "dim"):
            return lambda n, inputs, units: None
        return None
    if target in ZERO_PRESERVING_FUNCTIONS:
        return _same
    if target in COMBINING:
        return _combine
    if target is torch.flatten:
        return lambda n, inputs, units: _flatten(n, inputs)
    if target in (torch.mean, torch.sum, torch.amax):
        return _reduction
    if target in (torch.cat, torch.concat):
        return _concatenate
    if target is operator.getitem:
        return _getitem
    if target is F.pad:
        return _pad
    if target is getattr:  # x.shape is no tensor; a pair's .values is one we did not follow
        return lambda n, inputs, units: None if _shape(n) is None else NotImplemented
    return None


def _same(node: fx.Node, inputs: list[Channels | None], units: _Units) -> Any:
    shape = _shape(node)
    if len(inputs) != 1 or inputs[0] is None or shape is None or len(shape) < 2 or shape[1] != len(inputs[0]):
        return NotImplemented
    return inputs[0]


def _layer(name: str, module: nn.Linear | nn.Conv2d, node: fx.Node, inputs: list[Channels | None],
           units: _Units) -> Any:
    """A Linear or Conv2d: each input channel joins the column that reads it; its outputs are its
    own slots. A grouped conv's group g (its input block g and output block g) is one unit, so that
    its groups stay of equal widths: a depthwise conv's channel j is the channel j it reads."""
    if len(inputs) != 1 or inputs[0] is None or len(_shape(node) or ()) not in (2, 4):
        return NotImplemented
    (read,) = inputs
    out = [units.slot((name, "out", j)) for j in range(module.weight.shape[0])]
    groups = getattr(module, "groups", 1)
    if groups == 1:
        for k, unit in enumerate(read):
            units.join(units.slot((name, "in", k)), unit)
        return out
    reads, writes = len(read) // groups, len(out) // groups
    for g in range(groups):
        for unit in read[g * reads:(g + 1) * reads] + out[g * writes + 1:(g + 1) * writes]:
            units.join(out[g * writes], unit)
    return out


def _per_channel(name: str, inputs: list[Channels | None], units: _Units) -> Any:
    if len(inputs) != 1 or inputs[0] is None:
        return NotImplemented
    return [units.join(units.slot((name, "out", j)), unit) for j, unit in enumerate(inputs[0])]


def _combine(node: fx.Node, inputs: list[Channels | None], units: _Units) -> Any:
    """An elementwise sum, difference or product. With a scalar, a product keeps zeros and a sum
    does not; two tensors of the same channels join them; a broadcast channel is pinned."""
    shape = _shape(node)
    if shape is None or len(shape) < 2 or any(x is None for x in inputs):
        return NotImplemented
    known = [x for x in inputs if x is not None]
    product = node.target in (operator.mul, operator.imul, torch.mul, "mul", "mul_")
    if len(known) == 1:
        if not product:
            units.pin(known[0])
        return known[0] if len(known[0]) == shape[1] else NotImplemented
    a, b = known
    if len(a) == len(b) == shape[1]:
        if product:  # 0 * x is 0: a product is zero wherever either factor is
            return [None if x is None or y is None else units.join(x, y) for x, y in zip(a, b)]
        return [units.join(x, y) for x, y in zip(a, b)]
    wide, narrow = (a, b) if len(a) == shape[1] else (b, a)
    if len(narrow) != 1 or len(wide) != shape[1]:
        return NotImplemented
    units.pin(narrow)
    if not product:
        units.pin(wide)
    return wide


def _flatten(node: fx.Node, inputs: list[Channels | None]) -> Any:
    """(N, C, ...) to (N, C * rest): channel c becomes a block of `rest` consecutive features."""
    before, after = _shape(node.all_input_nodes[0]), _shape(node)
    if len(inputs) != 1 or inputs[0] is None or before is None or after is None or len(after) != 2 or \
            after[0] != before[0] or after[1] != math.prod(before[1:]):
        return NotImplemented
    block = after[1] // before[1]
    return [unit for unit in inputs[0] for _ in range(block)]


def _reduction(node: fx.Node, inputs: list[Channels | None], units: _Units) -> Any:
    """A mean, sum or maximum over dimensions other than the batch and channels keeps the channels."""
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    before = _shape(node.all_input_nodes[0])
    if len(inputs) != 1 or inputs[0] is None or dims is None or before is None:
        return NotImplemented
    dims = [d % len(before) for d in (dims if isinstance(dims, (tuple, list)) else [dims])]
    return inputs[0] if 0 not in dims and 1 not in dims else NotImplemented


def _concatenate(node: fx.Node, inputs: list[Channels | None], units: _Units) -> Any:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if any(x is None for x in inputs) or not inputs:
        return NotImplemented
    if dim == 1:
        return list(itertools.chain.from_iterable(x for x in inputs if x is not None))
    return NotImplemented


def _getitem(node: fx.Node, inputs: list[Channels | None], units: _Units) -> Any:
    """x[:, a:b:s, ...]: the channels selected, in order (slices only)."""
    index = node.args[1]
    if len(inputs) != 1 or inputs[0] is None:
        return NotImplemented
    index = index if isinstance(index, tuple) else (index,)
    if len(index) < 1 or not all(isinstance(i, slice) for i in index) or index[0] != slice(None):
        return NotImplemented
    return inputs[0][index[1]] if len(index) > 1 else inputs[0]


def _pad(node: fx.Node, inputs: list[Channels | None], units: _Units) -> Any:
    """Zero padding of a 4-d tensor's channels (a ResNet's option-A shortcut): zero channels before
    and after."""
    pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else 0) or 0
    mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
    if len(inputs) != 1 or inputs[0] is None or not isinstance(pad, (tuple, list)) or mode != "constant":
        return NotImplemented
    if len(pad) < 6:
        return inputs[0]
    if len(pad) > 6 or value != 0:
        return NotImplemented
    lo, hi = [units.slot(None) for _ in range(pad[4])], [units.slot(None) for _ in range(pad[5])]
    if lo or hi:
        owners = list(node.meta.get("nn_module_stack") or {})
        units.pads.append((owners[-1] if owners else "", lo, hi))
    return lo + inputs[0] + hi


def _pads(units: _Units) -> list[ChannelPad]:
    pinned = {units.find(i) for i in units.pinned}
    outputs: dict[int, Slot] = {}  # a unit's first layer output
    for i, slot in enumerate(units.slots):
        if slot is not None and slot[1] == "out":
            outputs.setdefault(units.find(i), slot)

    def side(ids: list[int]) -> tuple[Slot | None, ...]:
        return tuple(None if units.find(i) in pinned else outputs.get(units.find(i)) for i in ids)

    return [ChannelPad(module, len(lo), len(hi), (side(lo), side(hi))) for module, lo, hi in units.pads]


def _groups(units: _Units, modules: dict[str, nn.Module]) -> list[ChannelGroup]:
    """Units (joined slots without a pin) of the same layers whose indices step together, as groups."""
    members: dict[int, list[Slot]] = {}
    pinned = {units.find(i) for i in units.pinned}
    for i, slot in enumerate(units.slots):
        root = units.find(i)
        if slot is not None and root not in pinned:
            members.setdefault(root, []).append(slot)
    order = {name: k for k, name in enumerate(modules)}
    families: dict[tuple[tuple[str, str], ...], list[dict[tuple[str, str], list[int]]]] = {}
    for slots in members.values():
        if not any(role == "out" for _, role, _ in slots):
            continue  # nothing computes it: columns that only ever read zeros
        indices: dict[tuple[str, str], list[int]] = {}
        for module, role, index in slots:
            indices.setdefault((module, role), []).append(index)
        key = tuple(sorted(indices, key=lambda m: (m[1] != "out", order[m[0]], m[1])))
        families.setdefault(key, []).append({m: sorted(v) for m, v in indices.items()})
    groups = []
    for key, found in families.items():
        found.sort(key=lambda unit: unit[key[0]][0])
        for run in _runs(found, key):
            groups.append((key, run))
    groups.sort(key=lambda g: (order[g[0][0][0]], g[1][0][g[0][0]][0]))
    named: dict[str, int] = {}
    for key, _ in groups:
        named[key[0][0]] = named.get(key[0][0], 0) + 1
    return [_group(key, run, modules, named[key[0][0]] > 1) for key, run in groups]


def _runs(units: list[dict[tuple[str, str], list[int]]], key: Sequence[tuple[str, str]]) -> list[list[Any]]:
    """Split units (sorted) into runs where every layer's indices are equal blocks stepping by one block."""
    runs: list[list[Any]] = []
    for unit in units:
        run = runs[-1] if runs else None
        fits = run is not None and all(
            len(unit[m]) == len(run[0][m]) and unit[m][0] == run[-1][m][0] + len(run[0][m]) for m in key)
        if fits:
            run.append(unit)
        else:
            runs.append([unit])
    for run in runs:
        for unit in run:
            for m in key:
                block = unit[m]
                if block != list(range(block[0], block[0] + len(block))) or block[0] % len(block):
                    raise TraceError(f"channels of {m[0]} are read in an order surgery cannot cut "
                                     "(not whole blocks); use the torch-pruning backend (--backend torch-pruning)")
    return runs


def _group(key: Sequence[tuple[str, str]], run: list[dict[tuple[str, str], list[int]]],
           modules: dict[str, nn.Module], partial: bool) -> ChannelGroup:
    producers, consumers = [], []
    for module, role in key:
        block = len(run[0][(module, role)])
        offset = run[0][(module, role)][0] // block
        if role == "in":
            consumers.append(Slice(f"{module}.weight", 1, offset, block))
            continue
        tensors = itertools.chain(modules[module].named_parameters(recurse=False),
                                  modules[module].named_buffers(recurse=False))
        producers += [Slice(f"{module}.{name}", 0, offset, block) for name, t in tensors if t.dim() > 0]
    first, role = key[0]
    start = run[0][(first, role)][0]
    name = f"{first}[{start}:{start + len(run)}]" if partial else first
    return ChannelGroup(name, len(run), tuple(producers), tuple(consumers))


# --- the groups of any model: declared, or traced once -------------------------------------------

TRACED = "_ticketlab_traced"  # the attribute a trace is kept in on a model: copies of it keep it


@dataclass(frozen=True)
class Traced:
    """What tracing a model found, valid while its layers keep the shapes in `layout`."""

    layout: tuple[Any, ...]
    example: torch.Tensor | None  # the batch given to `trace` (None: a zoo model traced on its input shape)
    groups: list[ChannelGroup]
    pads: list[ChannelPad]


def layout(model: nn.Module) -> tuple[Any, ...]:
    """What the traced groups depend on: every tensor's name and shape (surgery changes them)."""
    return tuple((name, tuple(t.shape)) for name, t in model.state_dict().items())


def trace(model: nn.Module, example: torch.Tensor) -> list[ChannelGroup]:
    """Derive `model`'s channel groups from one batch of its input and keep them on the model (with
    the batch, which surgery checks the shrunk model on) while its layers keep their shapes."""
    groups, pads = derive(model, example)
    object.__setattr__(model, TRACED, Traced(layout(model), example.detach().cpu(), groups, pads))
    return groups


def traced(model: nn.Module) -> Traced | None:
    """The model's trace: the one `trace` kept, if its layers are unchanged since; else, for a model
    that knows its input shape (a zoo model's `input_shape`), one traced now on zeros of that shape
    and kept; else None."""
    found = getattr(model, TRACED, None)
    if found is not None and found.layout == layout(model):
        return found
    shape = getattr(model, "input_shape", None)
    if shape is None:
        return None
    param = next(model.parameters())
    groups, pads = derive(model, torch.zeros((2, *shape), device=param.device, dtype=param.dtype))
    found = Traced(layout(model), None, groups, pads)
    object.__setattr__(model, TRACED, found)
    return found


def traced_input(model: nn.Module) -> torch.Tensor | None:
    """The batch `model` was traced on with `trace`, if it was (and its layers are unchanged since);
    never traces it."""
    found = getattr(model, TRACED, None)
    return found.example if found is not None and found.layout == layout(model) else None


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The model's channel groups: declared (a zoo model's channel_groups()), or traced (`traced`);
    a one-line error if neither."""
    declare = getattr(model, "channel_groups", None)
    if callable(declare):
        try:
            return declare()
        except NotImplementedError:
            pass
    found = traced(model)
    if found is not None:
        return found.groups
    raise TicketlabError(f"{type(model).__name__} declares no channel groups and was not traced; call "
                         "ticketlab.trace(model, example_inputs) first (one batch of its input)")
