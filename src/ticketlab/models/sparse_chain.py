"""A chain of Linear layers with ReLUs between, some on sparse kernels, as one autograd operation.

    y = chain(layers, x)   # layers: nn.Linear and SparseLinear; relu after all but the last

Each layer on its own pays PyTorch's per-operation costs (the autograd Function, the transposes
in and out, the tensors around every kernel call): about as much as LeNet's sparse layers
compute at a lottery's late levels (BENCHMARKS.md, "Sparse kernels"). Here the whole chain is
one call into the C kernels forward and one backward (models/native.py): the input is
transposed once into their layout (features × batch padded to 8), each layer's input is kept
in one work buffer for backward, and a small dense layer runs as the CSR matrix of all its
entries. A chain with a larger dense layer runs layer by layer in the same layout instead, the
dense layers as PyTorch's matrix products. Either way the function and the parameters'
gradients are the layers' own, summed in another order.

`chain` runs it where it applies (a SparseLinear among the layers, the C kernels built, float32
on the CPU, shapes that chain); models.mlp.MLP calls it for its layers, SparseLinear for itself.
"""

from __future__ import annotations

import array
import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ticketlab.models.native import NativeKernels, native_kernels
from ticketlab.models.sparse_linear import SparseLinear

# A dense layer of at most this many weights runs inside the C chain as the CSR matrix of all its
# entries (LeNet's 100 → 10 output layer; one call is worth more than MKL's speed there); a larger
# one, layer by layer on MKL's matrix products, which run it several times faster.
SMALL_DENSE = 16384


@functools.lru_cache(maxsize=32)
def _every_entry(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The CSR indices (crow, col) of a full rows × cols matrix: its row-major weight is their values."""
    crow = torch.arange(0, rows * cols + 1, cols, dtype=torch.int32)
    return crow, torch.arange(cols, dtype=torch.int32).repeat(rows)


def _address(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.data_ptr()


def _packed(layers: Sequence[nn.Module], params: Sequence[torch.Tensor | None],
            grads: Sequence[torch.Tensor | None] | None = None) -> array.array:
    """The layers as the C chain reads them (csrc's layer_t), with where to write their gradients."""
    words: list[int] = []
    for i, layer in enumerate(layers):
        rows, cols = layer.out_features, layer.in_features
        if isinstance(layer, SparseLinear):  # its buffers read directly: nn.Module's lookup costs more than the rest
            crow, col = layer._buffers["crow"], layer._buffers["col"]
        else:
            crow, col = _every_entry(rows, cols)
        weight_grad, bias_grad = (grads[2 * i], grads[2 * i + 1]) if grads is not None else (None, None)
        words += [rows, cols, crow.data_ptr(), col.data_ptr(), params[2 * i].data_ptr(), _address(params[2 * i + 1]),
                  _address(weight_grad), _address(bias_grad)]
    return array.array("q", words)


class _NativeChainFunction(torch.autograd.Function):
    """x (batch, in), then each layer's weight (SparseLinear: its values) and bias -> the chain's
    output, forward and backward each one call into the C kernels."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layers: Sequence[nn.Module], kernels: NativeKernels,
                *params: torch.Tensor | None) -> torch.Tensor:
        out, work = kernels.chain_forward(_packed(layers, params), x)
        ctx.save_for_backward(work, *params)
        ctx.layers, ctx.kernels, ctx.x_shape = layers, kernels, x.shape
        return out

    @staticmethod
    @once_differentiable  # the kernels' products are not recorded: a gradient of this gradient is refused
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        work, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grads = [torch.empty_like(p) if p is not None and needs[3 + j] else None for j, p in enumerate(params)]
        grad_x = torch.empty(ctx.x_shape) if needs[0] else None
        layers = ctx.layers
        ctx.kernels.chain_backward(_packed(layers, params, grads), work, grad, grad_x)
        return (grad_x, None, None, *grads)


def _layer_by_layer(x: torch.Tensor, layers: Sequence[nn.Module], kernels: NativeKernels,
                    params: Sequence[torch.Tensor | None], inputs: list[torch.Tensor]) -> torch.Tensor:
    """The chain's output, a kernel call or matrix product per layer; each layer's input, in the
    padded layout (zeros past the batch), appended to `inputs`."""
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


class _LayerByLayerFunction(torch.autograd.Function):
    """The same function as _NativeChainFunction, for a chain with a large dense layer."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layers: Sequence[nn.Module], kernels: NativeKernels,
                *params: torch.Tensor | None) -> torch.Tensor:
        inputs: list[torch.Tensor] = []
        out = _layer_by_layer(x, layers, kernels, params, inputs)
        ctx.save_for_backward(*inputs, *params)
        ctx.layers, ctx.kernels, ctx.batch = layers, kernels, len(x)
        return out

    @staticmethod
    @once_differentiable  # the kernels' products are not recorded: a gradient of this gradient is refused
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
    where that does not apply: no layer on sparse kernels, a layer not Linear, shapes that do
    not chain, the C kernels not built, or not everything float32 on the CPU (the layers then
    run one by one, and report what is wrong)."""
    # The layers are judged before x, so that torch.fx tracing a dense model passes through
    # untouched (its x is a Proxy, which cannot be compared); one pass over them, parameters read
    # without nn.Module's attribute lookup: a step of a small network cannot spare the microseconds.
    params: list[torch.Tensor | None] = []
    sparse, one_call, features = False, True, None
    for layer in layers:
        if isinstance(layer, SparseLinear):
            sparse = True
        elif isinstance(layer, nn.Linear):
            one_call = one_call and layer.in_features * layer.out_features <= SMALL_DENSE
        else:
            return None
        if features is not None and layer.in_features != features:
            return None
        features = layer.out_features
        params.extend(layer._parameters.values())
    if not sparse or len(params) != 2 * len(layers):
        return None
    if x.dim() != 2 or x.shape[1] != layers[0].in_features:
        return None
    if x.dtype is not torch.float32 or x.device.type != "cpu":
        return None
    for p in params:
        if p is not None and (p.dtype is not torch.float32 or p.device.type != "cpu" or not p.is_contiguous()):
            return None
    kernels = native_kernels()
    if kernels is None:
        return None
    if torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in params)):
        function = _NativeChainFunction if one_call else _LayerByLayerFunction
        return function.apply(x, tuple(layers), kernels, *params)
    # Inference, or nothing to differentiate: the same products, which autograd does not record.
    if one_call:
        return kernels.chain_forward(_packed(layers, params), x)[0]
    return _layer_by_layer(x, layers, kernels, params, [])
