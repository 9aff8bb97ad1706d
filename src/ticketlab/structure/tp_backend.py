"""Surgery by the optional torch-pruning package, for models outside the zoo (and as a cross-check).

    pip install 'ticketlab[pruning]'      # pins the torch-pruning version this is tested with

    from ticketlab.structure.tp_backend import shrink_with_torch_pruning
    x = torch.randn(8, 3, 32, 32)          # a batch of real or random inputs
    keep = {"features.0": keep_flags,      # Conv/Linear module name -> bool per output channel
            "features.3": other_flags}
    small = shrink_with_torch_pruning(my_model, keep, x)   # raises unless equivalent

torch-pruning traces the model into a dependency graph and removes each pruned output
channel together with everything coupled to it: the BatchNorm after it, the next layers'
inputs, and the other layers added into the same residual sum. Layers coupled that way must
be given the same keep-flags (an unnamed layer keeps every channel); otherwise this raises
rather than pruning more or fewer channels than asked. The result is then compared with the
masked model, the input model with the pruned channels' weights and biases zeroed along with
the scale and shift of a BatchNorm that directly follows, on `x`, by the same check as
ticketlab's own surgery (surgery.check_equivalent, max abs difference <= 1e-5), and
TicketlabError is raised if they differ: never a silently wrong model. The input model is
left untouched.

Where torch-pruning cannot trace an architecture it fails loudly here. With the pinned 1.6.1
that is the zoo's option-A ResNet: the zero-padding shortcut (F.pad of a strided slice) is
traced as an elementwise op, so the 16-channel stream and the 32-channel one after it look
like the same channels; any mask that prunes residual-stream channels then raises, while a
mask that prunes only the blocks' inner channels shrinks correctly. ticketlab's own surgery
(surgery.shrink, `ticketlab shrink`) handles it, for zoo models and for any model
ticketlab.trace can follow; `ticketlab shrink --backend torch-pruning` runs this backend on a
zoo model as a cross-check of that surgery.

Saving: what this returns is torch-pruning's rebuild, with no record ticketlab can replay. To
save a shrunk model of one's own, shrink it with ticketlab's surgery and use
ticketlab.save_model(small, path, units) and ticketlab.load(path, factory=...); or export this
one with saving.export_onnx.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from importlib import metadata
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.models.base import ZooModel
from ticketlab.sparsity.mask import PRUNABLE_MODULES, Mask, unit_mask_to_mask
from ticketlab.structure.surgery import (
    BATCHNORMS, checked_groups, cut, default_input, kept_indices, refuse_empty_layers, check_equivalent,
)

INSTALL = "pip install 'ticketlab[pruning]'"


def shrink_with_torch_pruning(model: nn.Module, keep: Mapping[str, torch.Tensor],
                              example_inputs: torch.Tensor) -> nn.Module:
    """A smaller copy of `model` without the output channels `keep` prunes (Conv/Linear module
    name -> one keep-flag per output channel), made by torch-pruning and checked on
    `example_inputs` against the masked model; raises TicketlabError if they differ."""
    flags = _checked_keep(model, keep)
    masked = copy.deepcopy(model)
    _layer_mask(model, flags, example_inputs).apply(masked)
    return _shrink(model, flags, example_inputs, masked, zoo=False)


def shrink_zoo_with_torch_pruning(model: ZooModel, units: Mapping[str, torch.Tensor],
                                  check_input: torch.Tensor | None = None) -> ZooModel:
    """What surgery.shrink(model, units) returns, made by torch-pruning instead: the same
    inputs, the same check against the masked model, and the same architecture."""
    groups = checked_groups(model, units)
    state = model.state_dict()
    kept = kept_indices(state, groups, units)
    refuse_empty_layers(kept, groups, units)
    flags = {name: kept[f"{name}.weight"][0] for name, module in model.named_modules()
             if isinstance(module, PRUNABLE_MODULES) and 0 in kept.get(f"{name}.weight", {})}
    masked = copy.deepcopy(model)
    unit_mask_to_mask(masked, units).apply(masked)
    x = check_input if check_input is not None else default_input(model)
    try:
        small = _shrink(model, flags, x, masked, zoo=True)
    except TicketlabError as exc:
        raise TicketlabError(f"{exc}; ticketlab's own surgery handles this zoo model: "
                             "`ticketlab shrink --backend ticketlab` (surgery.shrink)") from None
    # The saved format rebuilds the small model with ticketlab's surgery, so it must match.
    expected = {key: tuple(cut(t, kept.get(key, {})).shape) for key, t in state.items()}
    got = {key: tuple(t.shape) for key, t in small.state_dict().items()}
    if got != expected:
        differ = next(key for key in expected if got.get(key) != expected[key])
        raise TicketlabError(f"torch-pruning shrank {type(model).__name__} to other shapes than ticketlab's "
                             f"surgery ({differ}: {got.get(differ)} vs {expected[differ]}); "
                             "use `ticketlab shrink --backend ticketlab`")
    return small  # type: ignore[return-value]


def _import_torch_pruning() -> ModuleType:
    """The torch_pruning module, or a one-line error saying how to install it."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise TicketlabError(f"the torch-pruning backend needs the torch-pruning package: {INSTALL}") from None
    return tp


def _checked_keep(model: nn.Module, keep: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    flags = {}
    for name, keep_flags in keep.items():
        module = modules.get(name)
        if not isinstance(module, PRUNABLE_MODULES):
            layers = [n for n, m in modules.items() if isinstance(m, PRUNABLE_MODULES)]
            what = "no such module" if module is None else f"a {type(module).__name__}"
            raise TicketlabError(f"cannot prune the output channels of {name!r} ({what}); expected a Linear or Conv "
                                 f"module name of this model, e.g. {', '.join(layers[:4])}")
        flags[name] = torch.as_tensor(keep_flags).to("cpu", torch.bool)
        if tuple(flags[name].shape) != (module.weight.shape[0],):
            raise TicketlabError(f"keep-flags for {name} have shape {tuple(flags[name].shape)}; expected "
                                 f"({module.weight.shape[0]},), one per output channel: flags made for this model")
        if not flags[name].any():
            raise TicketlabError(f"the keep-flags for {name} keep no channel, which would empty the layer; "
                                 "keep at least one")
    return flags


@torch.no_grad()
def _layer_mask(model: nn.Module, flags: Mapping[str, torch.Tensor], x: torch.Tensor) -> Mask:
    """The pruned channels' weights and biases, and the scale and shift of a BatchNorm whose
    input is the layer's output, zeroed: what ticketlab's structured masks zero."""
    params = dict(model.named_parameters())
    follows = _norms_after(model, set(flags), x)
    tensors = {}
    for module, layer in [(name, name) for name in flags] + list(follows.items()):
        for key in ("weight", "bias"):
            param = params.get(f"{module}.{key}")
            if param is not None:
                shape = (-1,) + (1,) * (param.dim() - 1)
                tensors[f"{module}.{key}"] = flags[layer].view(shape).expand_as(param)
    return Mask(tensors)


@torch.no_grad()
def _norms_after(model: nn.Module, layers: set[str], x: torch.Tensor) -> dict[str, str]:
    """Each BatchNorm that reads the output of one of `layers` directly: norm name -> layer name."""
    produced: dict[int, str] = {}
    alive = []  # the recorded outputs, so that no other tensor reuses their ids
    follows = {}

    def recorder(name: str, module: nn.Module) -> Any:
        def record(_: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if isinstance(module, BATCHNORMS) and inputs and id(inputs[0]) in produced:
                follows[name] = produced[id(inputs[0])]
            if name in layers:
                produced[id(output)] = name
                alive.append(output)
        return record

    handles = [m.register_forward_hook(recorder(name, m)) for name, m in model.named_modules()]
    training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return follows


def _shrink(model: nn.Module, flags: Mapping[str, torch.Tensor], x: torch.Tensor, masked: nn.Module,
            zoo: bool) -> nn.Module:
    tp = _import_torch_pruning()
    version = metadata.version("torch-pruning")
    arch = type(model).__name__
    small = copy.deepcopy(model)
    training = small.training
    small.eval()  # tracing runs a forward pass, which must not update BatchNorm statistics
    try:
        with torch.enable_grad():  # torch-pruning traces through autograd
            graph = tp.DependencyGraph().build_dependency(small, example_inputs=x, verbose=False)
        groups = _pruning_groups(graph, small, flags, zoo)
        for group in groups:
            group.prune(record_history=False)
    except TicketlabError as exc:
        raise TicketlabError(f"torch-pruning {version}'s graph of {arch} {exc}") from None
    except Exception as exc:  # torch-pruning raises many types on what it cannot trace
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TicketlabError(f"torch-pruning {version} cannot shrink {arch} ({reason})") from None
    small.train(training)
    try:
        check_equivalent(masked, small, x)
    except TicketlabError as exc:
        raise TicketlabError(f"torch-pruning {version} shrank {arch} to a model that does not compute what the "
                             f"masked one does: {exc}") from None
    return small


def _pruning_groups(graph: Any, model: nn.Module, flags: Mapping[str, torch.Tensor], zoo: bool) -> list[Any]:
    """One torch-pruning group per set of coupled layers that loses channels; raises unless
    every Conv/Linear in a group prunes exactly the channels its own flags prune (flags from a
    zoo model's channel groups always agree with its true couplings: there, torch-pruning erred)."""
    names = {module: name for name, module in model.named_modules()}
    pruned = {name: (~keep).nonzero().flatten().tolist() for name, keep in flags.items()}
    groups, done = [], set()
    for name, idxs in pruned.items():
        if not idxs or name in done:
            continue
        module = model.get_submodule(name)
        group = graph.get_pruning_group(module, graph.get_pruner_of_module(module).prune_out_channels, idxs)
        coupled = {names[dep.target.module]: sorted(set(group_idxs)) for dep, group_idxs in group
                   if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(dep.target.module, PRUNABLE_MODULES)}
        for other, other_idxs in coupled.items():
            if other_idxs != sorted(pruned.get(other, [])):
                advice = ("the model's channel groups do not tie them like this: torch-pruning mis-traces this "
                          "architecture (option-A ResNet's zero-padding shortcut, say)" if zoo else
                          f"give the coupled layers {', '.join(coupled)} matching keep-flags")
                raise TicketlabError(f"couples {name} with {other} (their channels are added or otherwise "
                                     f"tied), so pruning channels {_brief(idxs)} of {name} prunes {_brief(other_idxs)} "
                                     f"of {other}, but its keep-flags prune {_brief(pruned.get(other, []))}; {advice}")
        done |= set(coupled)
        groups.append(group)
    return groups


def _brief(idxs: list[int]) -> str:
    return "none" if not idxs else str(idxs) if len(idxs) <= 6 else f"[{', '.join(map(str, idxs[:6]))}, ...]"
