"""Which masked Linear layers train and run on sparse kernels (models.sparse_linear.SparseLinear).

    chosen = use_kernels(model, mask, "auto")  # in place; returns the layers now sparse
    constraint = MaskedTraining(model, dense_part(mask, chosen))  # the rest stays masked-dense

`dense`: none. `sparse`: every Linear weight the mask prunes. `auto`: those whose kept
fraction is at most AUTO_MAX_DENSITY and that hold at least AUTO_MIN_WEIGHTS weights, on the
CPU only; in a model that runs its Linear layers as one fused chain (models/sparse_chain.py,
`fuses_linear_chain`) on the C kernels, a layer of any size, since it no longer pays PyTorch's
per-layer costs that make a small sparse layer alone slower than a dense one. Both limits come
from bench/sparse_kernels.py (BENCHMARKS.md, "Sparse kernels"): above them, or for a small
layer, the CSR products are no faster than the dense masked ones; on CUDA nothing is measured
yet, so auto stays dense there. Conv layers always keep the dense masked path: no sparse
convolution in PyTorch's CPU build measured faster here.

The choice is a runtime option, like the thread count, and not part of a run's identity: the
two paths compute the same function with the same updates, summed in another order, and
either reuses the other's runs. Over a short run they agree to float rounding
(tests/test_kernels.py); over thousands of steps their trajectories drift apart as for any
change of summation order, and agree in what they find (BENCHMARKS.md). The same kernels on
the same machine, with the same implementation of them (the C kernels of models/native.py, or
PyTorch's operations where no compiler builds those), give the same results bit for bit; an
interrupted run resumes on the layers it started on (lottery.retrain passes them, read from its
resume point, instead of a rule).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ticketlab.config import TicketlabError, check_kernels
from ticketlab.models.native import native_kernels
from ticketlab.models.sparse_linear import SparseLinear
from ticketlab.sparsity.mask import Mask

AUTO_MAX_DENSITY = 0.2
AUTO_MIN_WEIGHTS = 100_000


def sparse_layers(model: nn.Module, mask: Mask, kernels: str) -> list[str]:
    """The Linear layers (module names) that `kernels` puts on the sparse path under `mask`."""
    check_kernels(kernels)
    if kernels == "dense":
        return []
    any_size = getattr(model, "fuses_linear_chain", False) and native_kernels() is not None
    chosen = []
    for name, module in model.named_modules():
        keep = mask.get(f"{name}.weight")
        if not isinstance(module, nn.Linear) or keep is None or bool(keep.all()):
            continue
        if kernels == "sparse" or (module.weight.device.type == "cpu" and (any_size or keep.numel() >= AUTO_MIN_WEIGHTS)
                                   and float(keep.float().mean()) <= AUTO_MAX_DENSITY):
            chosen.append(name)
    return chosen


def use_kernels(model: nn.Module, mask: Mask, kernels: str | Sequence[str]) -> list[str]:
    """Replace, in place, the Linear layers `kernels` chooses (or names: a resumed run's own) by
    SparseLinear layers holding their kept weights (the model's weights are read as they are: zero
    the pruned ones first or not, they are dropped). Returns those layers' names. Build the
    optimiser after this call."""
    mask.check_fits(model)
    chosen = sparse_layers(model, mask, kernels) if isinstance(kernels, str) else list(kernels)
    for name in chosen:
        if not isinstance(model.get_submodule(name), nn.Linear) or f"{name}.weight" not in mask:
            raise TicketlabError(f"{name} cannot run on sparse kernels: expected a Linear layer the mask covers")
    for name in chosen:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, SparseLinear(model.get_submodule(name), mask[f"{name}.weight"]))
    return chosen


def evaluated_copy(model: nn.Module, mask: Mask, kernels: str) -> nn.Module:
    """`model` (already under `mask`) itself where `kernels` chooses no layer, else a copy with
    the chosen Linear layers on sparse kernels: for evaluating a pruned network without training it."""
    chosen = sparse_layers(model, mask, kernels)
    if not chosen:
        return model
    copied = copy.deepcopy(model)
    use_kernels(copied, mask, chosen)
    return copied


def dense_part(mask: Mask, sparse: list[str]) -> Mask:
    """The mask without the weights of the `sparse` layers: what masked training still enforces."""
    dropped = {f"{name}.weight" for name in sparse}
    return Mask({name: keep for name, keep in mask.items() if name not in dropped})


@torch.no_grad()
def densify(model: nn.Module) -> None:
    """Replace every SparseLinear in `model` by the nn.Linear it stands for, in place (for exporters
    and code that needs plain modules)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, SparseLinear):
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                               device=module.values.device, dtype=module.values.dtype)
            linear.weight.copy_(module.weight)
            if module.bias is not None:
                linear.bias = module.bias
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, linear)
