"""A model's forward pass as a chain of layers, read from its traced graph.

`layer_chain(model)` is the list of steps a forward pass is made of when it is nothing but
Linear/Conv2d layers one after another (each used once), each followed by at most a ReLU and a BatchNorm (in
either order) and a Dropout (the identity in eval mode), with a flatten before a layer where
the tensor needs one. Any other model (a residual add, pooling, a model torch.fx cannot trace)
has no chain: None. Nothing is read from the model's class, so a subclass, a zoo model and a
user's own model are judged alike, by what their forward computes.

The search evaluators (search/evaluators/chain.py and delta.py) use the chain to compute a
forward pass layer by layer with the same operations the model's forward uses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
RELUS = {F.relu, torch.relu}
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d)


@dataclass(frozen=True)
class ChainStep:
    """One Linear/Conv2d layer of a chain, with what the model's forward does around it."""

    layer: str
    relu: bool = False
    norm: str | None = None  # a BatchNorm with running statistics
    norm_first: bool = False  # the BatchNorm comes before the ReLU
    flatten: bool = False  # flatten the input (from dim 1) first


def layer_chain(model: nn.Module, input_dims: int) -> list[ChainStep] | None:
    """The steps of `model`'s forward pass on inputs of `input_dims` dimensions (the batch's
    included), if it is a chain (see the module doc), else None."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # torch.fx raises many kinds; a model it cannot follow simply has no chain
        return None
    modules = dict(model.named_modules())
    steps: list[ChainStep] = []
    flatten = False
    dims = input_dims  # of the tensor computed so far: a Linear reads 2, a Conv2d 4
    value: fx.Node | None = None  # the tensor the chain has computed so far
    for node in graph.nodes:
        if node.op == "placeholder":
            if value is not None:
                return None  # a second input
            value = node
            if len(node.users) != 1:
                return None
            continue
        if node.op == "output":
            return steps if steps and node.args[0] is value and not flatten else None
        if len(node.users) != 1 or not node.args or node.args[0] is not value:
            return None  # the chain forks, or this node does not continue it
        if any(isinstance(arg, fx.Node) for arg in (*node.args[1:], *node.kwargs.values())):
            return None  # reads a second tensor
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if (2 if flatten else dims) != (2 if isinstance(module, nn.Linear) else 4):
                return None
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros" or \
                    any(step.layer == node.target for step in steps):
                return None  # a padding the evaluators do not compute, or a layer used twice
            steps.append(ChainStep(str(node.target), flatten=flatten))
            flatten, dims = False, 2 if isinstance(module, nn.Linear) else 4
        elif _is_flatten(node, module):
            flatten = True
        elif not steps or flatten:
            return None  # something before the first layer, or between a flatten and its layer
        elif _is_relu(node, module):
            if steps[-1].relu:
                return None
            steps[-1] = replace(steps[-1], relu=True)
        elif isinstance(module, NORMS) and module.track_running_stats and module.running_mean is not None:
            if steps[-1].norm is not None:
                return None
            steps[-1] = replace(steps[-1], norm=str(node.target), norm_first=not steps[-1].relu)
        elif not isinstance(module, DROPOUTS):
            return None
        value = node
    return None


def _is_flatten(node: fx.Node, module: nn.Module | None) -> bool:
    """x.flatten(1), torch.flatten(x, 1) or nn.Flatten() (from dim 1 to the last)."""
    if isinstance(module, nn.Flatten):
        return module.start_dim == 1 and module.end_dim == -1
    if node.op == "call_method" and node.target == "flatten" or node.op == "call_function" and \
            node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    return False


def _is_relu(node: fx.Node, module: nn.Module | None) -> bool:
    if isinstance(module, nn.ReLU):
        return True
    return node.op == "call_function" and node.target in RELUS or node.op == "call_method" and node.target == "relu"
