"""Surgery: cut pruned units out of a model, giving a smaller dense network that computes
exactly what the masked one did (DESIGN.md, "physical pruning").

    from ticketlab.structure.surgery import shrink, count_parameters, count_macs
    small = shrink(model, {"fc1": keep_flags, ...})  # raises unless equivalent

The model's channel groups (declared by a zoo model, or derived by `ticketlab.trace` for any
other) say which state_dict slices belong to each unit; every kept slice of every Linear, Conv2d
(grouped and depthwise ones included: whole groups go) and BatchNorm is copied into a new,
smaller module of the same kind. A zero padding of channels that the trace found (a ResNet's
option-A shortcut) gets fewer padded channels. Nothing here knows a model's class.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.models.base import ZooModel
from ticketlab.models.structure import ChannelGroup
from ticketlab.models.tracing import channel_groups, trace, traced, traced_input
from ticketlab.sparsity.mask import unit_mask_to_mask

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
CHECK_BATCH = 8
CHECK_SEED = 0

# For each state_dict key, the keep-flags of each dimension that loses indices.
Kept = dict[str, dict[int, torch.Tensor]]


def shrink(model: nn.Module, units: Mapping[str, torch.Tensor],
           check_input: torch.Tensor | None = None) -> nn.Module:
    """A smaller copy of `model` without the units `units` prunes (group name -> keep-flags;
    groups not named keep everything).

    The copy is checked against the masked model on `check_input` (default: a fixed random
    batch of the model's input shape, or of the shape it was traced on) and TicketlabError is
    raised if they differ. A traced model's copy is traced again, so it can be pruned further.
    """
    groups = checked_groups(model, units)
    state = model.state_dict()
    kept = kept_indices(state, groups, units)
    refuse_empty_layers(kept, groups, units)

    small = copy.deepcopy(model)
    for name in {key.rpartition(".")[0] for key in kept}:
        _replace(small, name, {key: t for key, t in state.items() if key.rpartition(".")[0] == name}, kept)
    _shrink_channel_pads(model, small, kept)
    small.load_state_dict({key: cut(tensor, kept.get(key, {})) for key, tensor in state.items()})
    small.train(model.training)

    masked = copy.deepcopy(model)
    unit_mask_to_mask(masked, units).apply(masked)
    if check_input is None:
        check_input = default_input(model)
    check_equivalent(masked, small, check_input)
    if traced_input(model) is not None:
        trace(small, traced_input(model))
    return small


@torch.no_grad()
def check_equivalent(masked: nn.Module, small: nn.Module, x: torch.Tensor, atol: float = 1e-5) -> float:
    """The max abs difference of the two models' outputs on `x` in eval mode; raises
    TicketlabError if it exceeds `atol`. Both models' train/eval modes are restored."""
    modes = masked.training, small.training
    masked.eval()
    small.eval()
    try:
        expected, got = masked(x), small(x)
    finally:
        masked.train(modes[0])
        small.train(modes[1])
    if expected.shape != got.shape:
        raise TicketlabError(f"the shrunk model outputs {tuple(got.shape)}, the masked one {tuple(expected.shape)}")
    difference = (expected - got).abs().max().item()
    if not difference <= atol:  # also catches NaN
        raise TicketlabError(f"the shrunk model differs from the masked one by {difference:.3g} "
                             f"(max abs over a batch of {len(x)}; allowed {atol:g})")
    return difference


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of the model's Linear and Conv2d layers for one input."""
    macs = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        # Each output element is one dot product over a weight row (in/groups x kernel for a conv).
        macs += output.numel() * module.weight[0].numel()

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    handles = [layer.register_forward_hook(count) for layer in layers]
    training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        model(torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return macs


def checked_groups(model: nn.Module, units: Mapping[str, torch.Tensor]) -> dict[str, ChannelGroup]:
    groups = {g.name: g for g in channel_groups(model)}
    for name, keep in units.items():
        if name not in groups:
            raise TicketlabError(f"unknown channel group {name!r}; the model has {', '.join(groups)}")
        if tuple(keep.shape) != (groups[name].size,):
            raise TicketlabError(f"structured mask for {name} has {tuple(keep.shape)} flags; "
                                 f"expected ({groups[name].size},): a mask made for this model")
    return groups


def kept_indices(state: Mapping[str, torch.Tensor], groups: Mapping[str, ChannelGroup],
                  units: Mapping[str, torch.Tensor]) -> Kept:
    kept: Kept = {}
    for name, keep in units.items():
        pruned = (~keep.bool()).nonzero().flatten().tolist()
        group = groups[name]
        for piece in (*group.producers, *group.consumers):
            if piece.param not in state:
                raise TicketlabError(f"channel group {name} names {piece.param}, which the model's "
                                     "state does not have; expected plain Linear/Conv2d/BatchNorm modules")
            flags = kept.setdefault(piece.param, {}).setdefault(
                piece.dim, torch.ones(state[piece.param].shape[piece.dim], dtype=torch.bool))
            for unit in pruned:
                flags[piece.index(unit)] = False
    return kept


def refuse_empty_layers(kept: Kept, groups: Mapping[str, ChannelGroup], units: Mapping[str, torch.Tensor]) -> None:
    # A group keeping nothing is fine when other groups share its layers (a ResNet's padded
    # channels); a layer keeping nothing would cut the network in two.
    for param, dims in kept.items():
        for dim, flags in dims.items():
            if not flags.any():
                empty = [name for name, keep in units.items() if not keep.bool().any()
                         and any(p.param == param and p.dim == dim
                                 for p in (*groups[name].producers, *groups[name].consumers))]
                raise TicketlabError(f"channel group {', '.join(empty)} keeps no units, which would empty "
                                     f"{param}; keep at least one unit per layer")


def cut(tensor: torch.Tensor, dims: Mapping[int, torch.Tensor]) -> torch.Tensor:
    for dim, flags in dims.items():
        tensor = tensor.index_select(dim, flags.nonzero().flatten().to(tensor.device))
    return tensor


def _replace(small: nn.Module, name: str, state: Mapping[str, torch.Tensor], kept: Kept) -> None:
    """Put a module of the cut shapes in place of `name` (its weights are loaded later)."""
    module = small.get_submodule(name)
    shapes = {key.rpartition(".")[2]: cut(t, kept.get(key, {})).shape for key, t in state.items()}
    first = next(t for t in state.values() if t.is_floating_point())
    like = {"device": first.device, "dtype": first.dtype}
    new: nn.Module
    if isinstance(module, nn.Linear):
        out_features, in_features = shapes["weight"]
        new = nn.Linear(in_features, out_features, bias=module.bias is not None, **like)
    elif isinstance(module, nn.Conv2d):
        out_channels, in_channels, *_ = shapes["weight"]
        groups = 1
        if module.groups > 1:  # whole groups are cut (models/tracing.py): each keeps its widths
            writes = module.out_channels // module.groups
            if out_channels % writes:
                raise TicketlabError(f"cannot shrink {name}: its cut does not keep whole groups of {writes} "
                                     "filters; use --backend torch-pruning")
            groups = out_channels // writes
            in_channels = groups * (module.in_channels // module.groups)
        new = nn.Conv2d(in_channels, out_channels, module.kernel_size, stride=module.stride,
                        padding=module.padding, dilation=module.dilation, groups=groups,
                        bias=module.bias is not None, padding_mode=module.padding_mode, **like)
    elif isinstance(module, BATCHNORMS):
        features = next(shape[0] for shape in shapes.values() if len(shape) > 0)
        new = type(module)(features, eps=module.eps, momentum=module.momentum, affine=module.affine,
                           track_running_stats=module.track_running_stats, **like)
    else:
        raise TicketlabError(f"cannot shrink {name}: a {type(module).__name__}, "
                             "expected Linear, Conv2d or BatchNorm")
    parent, _, child = name.rpartition(".")
    setattr(small.get_submodule(parent), child, new)


def _shrink_channel_pads(model: nn.Module, small: nn.Module, kept: Kept) -> None:
    """Give each zero padding of channels (an option-A shortcut) as many padded channels on each side
    as the units they were joined with keep. The widths are the `lo` and `hi` attributes of the
    module that pads (its forward must read them there, as models.resnet.ZeroPadShortcut's does)."""
    found = traced(model)
    for pad in found.pads if found is not None else []:
        lo, hi = (sum(_kept(kept, slot) for slot in side) for side in pad.sides)
        if (lo, hi) == (pad.lo, pad.hi):
            continue
        owner = small.get_submodule(pad.module)
        if (getattr(owner, "lo", None), getattr(owner, "hi", None)) != (pad.lo, pad.hi):
            raise TicketlabError(f"cannot shrink {pad.module or type(model).__name__}: it pads {pad.lo} + {pad.hi} "
                                 "zero channels whose units are cut, and surgery can only change widths a module "
                                 "holds as its lo and hi attributes; use --backend torch-pruning")
        owner.lo, owner.hi = lo, hi


def _kept(kept: Kept, slot: tuple[str, str, int] | None) -> bool:
    """Whether surgery keeps the layer output `slot` (None: a channel never cut)."""
    if slot is None:
        return True
    module, _, index = slot
    flags = next((dims[0] for key, dims in kept.items() if key.rpartition(".")[0] == module and 0 in dims), None)
    return flags is None or bool(flags[index])


def default_input(model: nn.Module) -> torch.Tensor:
    """A fixed random batch of the model's input shape (a zoo model's, or the shape it was traced on)."""
    traced = traced_input(model)
    if isinstance(model, ZooModel):
        shape = (CHECK_BATCH, *model.input_shape)
    elif traced is not None:
        shape = (max(CHECK_BATCH, traced.shape[0]), *traced.shape[1:])
    else:
        raise TicketlabError(f"{type(model).__name__} has no input shape to check the shrunk model on; trace it "
                             "(ticketlab.trace(model, example_inputs)) or give check_input")
    generator = torch.Generator().manual_seed(CHECK_SEED)
    param = next(model.parameters())
    return torch.randn(shape, generator=generator).to(param.device, param.dtype)

