"""A chain of Linear layers with ReLUs between, some on sparse kernels, as one autograd operation.

    y = chain(layers, x)   # layers: nn.Linear and SparseLinear; relu after all but the last

Each layer on its own pays PyTorch's per-operation costs (the autograd Function, the transposes
in and out, the tensors around every kernel call): about as much as LeNet's sparse layers
compute at a lottery's late levels (BENCHMARKS.md, "Sparse kernels"). Here the input is
transposed once into the kernels' layout (features × batch padded to 8, models/native.py), every
layer and activation works in it, and backward walks the chain back in one call: the sparse
layers on the C kernels, the dense ones as matrix products in the same layout. The function,
its gradients and the parameters' gradients are the layers' own, summed in another order.

`chain` runs it where it applies (a SparseLinear among the layers, the C kernels built, float32
on the CPU); models.mlp.MLP calls it for its layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ticketlab.models.native import NativeKernels
from ticketlab.models.sparse_linear import SparseLinear


def _forward(x: torch.Tensor, layers: Sequence[nn.Module], kernels: NativeKernels,
             params: Sequence[torch.Tensor | None], inputs: list[torch.Tensor]) -> torch.Tensor:
    """The chain's output; each layer's input, in the padded layout (zeros past the batch), appended to `inputs`."""
    batch = len(x)
    h = kernels.padded(x)
    for i, layer in enumerate(layers):
        inputs.append(h)
        weight, bias = params[2 * i], params[2 * i + 1]
        if isinstance(layer, SparseLinear):
            h = kernels.forward(layer.crow, layer.col, weight, bias, h)
        else:
            h = torch.mm(weight, h) if bias is None else torch.addmm(bias.unsqueeze(1), weight, h)
        if i < len(layers) - 1:
            kernels.relu_pad(h, batch)
    return h[:, :batch].t()


class _ChainFunction(torch.autograd.Function):
    """x (batch, in), then each layer's weight (SparseLinear: its values) and bias -> the chain's output."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layers: Sequence[nn.Module], kernels: NativeKernels,
                *params: torch.Tensor | None) -> torch.Tensor:
        inputs: list[torch.Tensor] = []
        out = _forward(x, layers, kernels, params, inputs)
        ctx.save_for_backward(*inputs, *params)
        ctx.layers, ctx.kernels, ctx.batch = layers, kernels, len(x)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        layers, kernels = ctx.layers, ctx.kernels
        saved = ctx.saved_tensors
        inputs, params = saved[:len(layers)], saved[len(layers):]
        needs = ctx.needs_input_grad[3:]
        grads: list[torch.Tensor | None] = [None] * len(params)
        g = kernels.padded(grad)
        for i in reversed(range(len(layers))):
            layer, h, weight = layers[i], inputs[i], params[2 * i]
            sparse = isinstance(layer, SparseLinear)
            if params[2 * i + 1] is not None and needs[2 * i + 1]:
                grads[2 * i + 1] = kernels.row_sums(g)
            if needs[2 * i]:
                grads[2 * i] = kernels.weight_grad(layer.crow, layer.col, g, h) if sparse else torch.mm(g, h.t())
            if i == 0 and not ctx.needs_input_grad[0]:
                break  # the data's gradient: not asked for
            g = (kernels.input_grad(layer.crow, layer.col, weight, g, layer.in_features) if sparse
                 else torch.mm(weight.t(), g))
            if i > 0:
                kernels.relu_grad(h, g)  # h: the previous layer's activation
        grad_x = g[:, :ctx.batch].t() if ctx.needs_input_grad[0] else None
        return (grad_x, None, None, *grads)


def chain(layers: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor | None:
    """relu(...relu(x @ W1.T + b1)...) @ Wn.T + bn as one operation (x: batch × features), or None
    where that does not apply: no layer on sparse kernels, a layer not Linear, the C kernels not
    built, or not everything float32 on the CPU (the layers then run one by one)."""
    sparse = [layer for layer in layers if isinstance(layer, SparseLinear)]
    if not sparse or not all(isinstance(layer, (nn.Linear, SparseLinear)) for layer in layers):
        return None
    # Each layer's weight (a SparseLinear's values) and bias, read without nn.Module's attribute lookup:
    # a step of a small network cannot spare the microseconds.
    params = [p for layer in layers for p in layer._parameters.values()]
    if len(params) != 2 * len(layers) or not all(
            p is None or (p.dtype is torch.float32 and p.device.type == "cpu") for p in params):
        return None
    kernels = sparse[0].native(x)
    if kernels is None:
        return None
    if torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in params)):
        return _ChainFunction.apply(x, tuple(layers), kernels, *params)
    with torch.no_grad():  # inference: the same products without autograd's bookkeeping
        return _forward(x, layers, kernels, params, [])
