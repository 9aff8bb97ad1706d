"""A Linear layer that holds only its kept weights and runs on sparse (CSR) kernels.

`SparseLinear(linear, keep)` stands in for `linear` under the boolean mask `keep`: its one
weight parameter, `values`, is the kept entries in row-major (CSR) order, and the pattern
lives in index buffers. Forward is a CSR × dense product, backward the input's gradient through
the same pattern transposed and the weights' gradient at the kept entries only, never the dense
outer product. An optimiser of `values` keeps state for kept entries only, and a pruned weight
is zero by construction: it has no entry.

Two implementations compute it. For float32 on the CPU, the C kernels of models/native.py (one
pass over the kept weights per product, the bias added in the same pass; several times faster
than PyTorch's operations at a training batch), the layer run as a chain of one
(models/sparse_chain.py). Elsewhere, or where they cannot be built,
PyTorch's: embedding_bag's weighted sums from a batch of CSR_BELOW_BATCH on, MKL's CSR product
below it, and `torch.sparse.sampled_addmm` for the weights' gradient.

Outside, the layer looks dense: `weight` is the full matrix (zeros where pruned), and its
state_dict holds `weight` (and `bias`) as nn.Linear's does, so checkpoints, masks and every
consumer of a run are the same whichever layer trained it. A state_dict loaded into it keeps
the entries of its pattern; what lies outside is pruned and dropped.

Activations are computed transposed (features × batch) and handed on as transposed views, so
a chain of these layers (with elementwise activations between) never copies its inputs.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from torch import nn

from ticketlab.models.native import native_status, unexpectedly_missing

# PyTorch marks its CSR support beta, once per process; the kernels used here are tested against dense.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


# Below this many columns (the batch), PyTorch's CSR × dense product (MKL) beats embedding_bag,
# which pays per kept weight; from it on, embedding_bag (FBGEMM) is up to 2.5× faster
# (BENCHMARKS.md, "Sparse kernels").
CSR_BELOW_BATCH = 16


def csr_product(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """A @ table for A the CSR matrix (crow, col, values) with as many columns as `table` has rows:
    row r of the result is the sum over k in [crow[r], crow[r + 1]) of values[k] · table[col[k]]."""
    if table.shape[1] < CSR_BELOW_BATCH:
        matrix = torch.sparse_csr_tensor(crow, col, values, (len(crow) - 1, len(table)), check_invariants=False)
        # One column: MKL's matrix-vector product, about half the time of its matrix-matrix one here.
        return (matrix @ table[:, 0]).unsqueeze(1) if table.shape[1] == 1 else matrix @ table
    return torch.nn.functional.embedding_bag(col, table, crow[:-1], mode="sum", per_sample_weights=values)


class _SparseLinearFunction(torch.autograd.Function):
    """x (batch, in), values (nnz,) -> x @ W.T, W the layer's CSR matrix of `values`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, values: torch.Tensor, layer: SparseLinear) -> torch.Tensor:
        ctx.layer = layer
        # The products read x transposed in memory (in × batch): the previous layer's output
        # already is; a batch of data is transposed here once, for forward and backward.
        x_t = x.t().contiguous()
        ctx.save_for_backward(x_t, values)
        return layer.product(values, x_t).t()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x_t, values = ctx.saved_tensors
        layer = ctx.layer
        grad_t = grad.t().contiguous()  # (out, batch): the next layer's input gradient already is
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:  # not for a first layer, whose input is data
            grad_x = csr_product(layer.t_crow, layer.t_col, values[layer.t_order], grad_t).t()
        if ctx.needs_input_grad[1]:  # (grad.T @ x) at the kept entries only
            grad_values = torch.sparse.sampled_addmm(layer.csr(values), grad_t, x_t.t(), beta=0.0).values()
        return grad_x, grad_values, None


@functools.cache
def _say_native_missing() -> None:
    """Once per process: the layers run, slower, without the C kernels; why."""
    warnings.warn(f"sparse kernels run on {native_status()}", stacklevel=3)


class SparseLinear(nn.Module):
    """`linear` under `keep` (a bool tensor of its weight's shape), trained and run on sparse kernels.
    The bias, if any, is `linear`'s own parameter, shared."""

    def __init__(self, linear: nn.Linear, keep: torch.Tensor):
        super().__init__()
        if keep.shape != linear.weight.shape:
            raise ValueError(f"keep has shape {tuple(keep.shape)}, the weight {tuple(linear.weight.shape)}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        keep = keep.to(device=linear.weight.device, dtype=torch.bool)
        rows = keep.sum(1)
        crow = torch.zeros(self.out_features + 1, dtype=torch.int64, device=keep.device)
        torch.cumsum(rows, 0, out=crow[1:])
        flat = keep.flatten().nonzero().flatten()  # row-major: the CSR order of `values`
        position = torch.full(keep.shape, -1, dtype=torch.int64, device=keep.device)
        position.view(-1)[flat] = torch.arange(len(flat), device=keep.device)
        t_crow = torch.zeros(self.in_features + 1, dtype=torch.int64, device=keep.device)
        torch.cumsum(keep.sum(0), 0, out=t_crow[1:])
        # Buffers, not saved: the pattern is the mask's, and the state_dict stays nn.Linear's. The
        # CSR indices are int32, as MKL takes them (int64 ones are converted at every product).
        self.register_buffer("flat", flat, persistent=False)
        self.register_buffer("crow", crow.int(), persistent=False)
        self.register_buffer("col", (flat % self.in_features).int(), persistent=False)
        self.register_buffer("t_crow", t_crow.int(), persistent=False)
        self.register_buffer("t_col", (keep.t().flatten().nonzero().flatten() % self.out_features).int(),
                             persistent=False)
        self.register_buffer("t_order", position.t()[keep.t()], persistent=False)  # values in W.T's CSR order
        self.values = nn.Parameter(linear.weight.detach()[keep].clone())
        self.register_parameter("bias", linear.bias)  # shared; registered even when None, as nn.Linear does
        self.register_state_dict_post_hook(_dense_state)
        self.register_load_state_dict_pre_hook(_values_from_dense)
        if unexpectedly_missing():
            _say_native_missing()

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, (self.out_features, self.in_features),
                                       check_invariants=False)

    def product(self, values: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """W @ x_t for x_t (in, batch), contiguous: (out, batch)."""
        return csr_product(self.crow, self.col, values, x_t)

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight, zeros where pruned (differentiable in `values`)."""
        dense = self.values.new_zeros(self.out_features * self.in_features)
        return dense.index_put((self.flat,), self.values).view(self.out_features, self.in_features)

    def kept(self) -> int:
        return len(self.values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features) if x.dim() != 2 else x
        from ticketlab.models.sparse_chain import chain  # here: that module builds on this one
        y = chain((self,), flat)  # the C kernels, where they apply: a chain of one layer
        if y is not None:
            return y.reshape(*lead, self.out_features) if x.dim() != 2 else y
        if torch.is_grad_enabled() and (self.values.requires_grad or flat.requires_grad):
            y = _SparseLinearFunction.apply(flat, self.values, self)
        else:  # inference: the same product without autograd's bookkeeping
            y = self.product(self.values, flat.t().contiguous()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features) if x.dim() != 2 else y

    def extra_repr(self) -> str:
        total = self.out_features * self.in_features
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"kept={self.kept()}/{total}")


def _dense_state(module: SparseLinear, state: dict[str, Any], prefix: str, _: Any) -> None:
    """state_dict hook: `values` written as nn.Linear's dense `weight`."""
    values = state.pop(prefix + "values")
    weight = torch.zeros(module.out_features * module.in_features, dtype=values.dtype, device=values.device)
    weight[module.flat] = values
    state[prefix + "weight"] = weight.view(module.out_features, module.in_features)
    if prefix + "bias" in state:  # nn.Linear's order: weight, then bias
        state[prefix + "bias"] = state.pop(prefix + "bias")


def _values_from_dense(module: SparseLinear, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """load_state_dict pre-hook: a dense `weight` read at the layer's pattern into `values`."""
    weight = state.pop(prefix + "weight", None)
    if weight is not None:
        if weight.shape != (module.out_features, module.in_features):
            state[prefix + "weight"] = weight  # left for load_state_dict to report as unexpected
            return
        state[prefix + "values"] = weight.reshape(-1)[module.flat.to(weight.device)]


def trained_parameter(model: nn.Module, name: str) -> nn.Parameter:
    """The parameter that trains `name`: itself, or for the weight of a SparseLinear its `values`."""
    params = dict(model.named_parameters())
    if name in params:
        return params[name]
    owner, _, attribute = name.rpartition(".")
    module = model.get_submodule(owner)
    if isinstance(module, SparseLinear) and attribute == "weight":
        return module.values
    raise KeyError(name)
