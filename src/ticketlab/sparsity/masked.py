"""Masked training: pruned weights stay exactly zero at every step.

In a notebook, train any model under a mask with

    from ticketlab.sparsity.masked import masked_fit
    summary = masked_fit(model, data, cfg, mask)  # takes training.loop.fit's options too

Code that builds its own `Trainer` passes `constraint=MaskedTraining(model, mask)` instead. In a
training loop of one's own, one call after each optimiser step is the whole contract:

    keep = ticketlab.MaskedTraining(model, mask)  # the pruned weights are zero from here on
    for x, y in batches:
        optimizer.zero_grad(); loss_fn(model(x), y).backward(); optimizer.step()
        keep.after_step(optimizer)  # pruned weights and their optimiser state back to exactly zero

How: before training starts or resumes, the pruned weights and their optimiser state are
zeroed (a resume point may come from an unmasked run); before each optimiser step, the
pruned entries of the gradients are zeroed. With a zero weight, gradient and state, SGD
(momentum, Nesterov, weight decay), Adam (weight decay) and Adadelta all compute exactly
zero for the entry's new state and update (the loss's L1/L2 penalties are in the masked
gradient). So pruned weights and their optimiser state stay exactly 0.0 with no masking
after the step; tests/test_masked_training.py checks this per optimiser at every step.

Sparse kernels: `MaskedTraining(model, mask, kernels="auto")` (or "sparse") first moves the
Linear layers that kernels.sparse_layers chooses onto CSR kernels (models.sparse_linear): they
hold their kept weights only, so there is nothing to zero, and the rest is masked as above.

Cost: one multiply over the masked gradients per step. With Adam, PyTorch's (non-fused)
step also takes the square root of the pruned entries' zero second moments, which on some
CPUs is several times slower than on other numbers; bench/masked_training.py measures it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ticketlab.config import TrainConfig
from ticketlab.data import Dataset
from ticketlab.sparsity.kernels import dense_part, use_kernels
from ticketlab.sparsity.mask import Mask
from ticketlab.training.loop import fit


class MaskedTraining:
    """Keeps `model`'s pruned entries at zero during training (a training.loop.StepConstraint).

    Building it zeroes them in the model. Build it after the model is on its final device: the
    masks are copied there once. With `kernels` other than "dense" it first replaces the Linear
    layers that sparsity.kernels chooses (or that `kernels` lists), in place (their names:
    `sparse`); build the optimiser after.
    """

    def __init__(self, model: nn.Module, mask: Mask, kernels: str | Sequence[str] = "dense"):
        self.sparse = use_kernels(model, mask, kernels)
        mask = dense_part(mask, self.sparse)
        params = dict(model.named_parameters())
        # A tensor that keeps everything needs no work at each step.
        pruned = [name for name, keep in mask.items() if not keep.all()]
        self.params = [params[name] for name in pruned]
        self.keep = [mask[name].to(device=params[name].device, dtype=params[name].dtype) for name in pruned]
        if self.params:
            with torch.no_grad():
                torch._foreach_mul_(self.params, self.keep)

    @torch.no_grad()
    def enforce(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero the pruned weights and their optimiser state (momentum, Adam's moments, ...)."""
        if self.params:
            torch._foreach_mul_(self.params, self.keep)
        for param, keep in zip(self.params, self.keep):
            for value in optimizer.state.get(param, {}).values():
                if torch.is_tensor(value) and value.shape == param.shape:
                    value.mul_(keep)

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """For a loop of one's own: after each optimiser step, put the pruned weights and their
        optimiser state back to zero. Every optimiser here is elementwise, so the kept weights
        follow the same path as with before_step (tests/test_masked_training.py)."""
        self.enforce(optimizer)

    def before_step(self) -> None:
        """Zero the pruned entries of the gradients (a parameter without a gradient is not stepped)."""
        pairs = [(p.grad, keep) for p, keep in zip(self.params, self.keep) if p.grad is not None]
        if pairs:
            grads, keeps = zip(*pairs)
            torch._foreach_mul_(list(grads), list(keeps))


def masked_fit(model: nn.Module, data: Dataset, cfg: TrainConfig, mask: Mask, kernels: str = "dense",
               **options: Any) -> dict[str, Any]:
    """Train `model` on `data` with the entries `mask` prunes held at exactly zero.

    `kernels` "sparse" or "auto" trains (and leaves) the chosen Linear layers on sparse kernels
    (sparsity.kernels). Takes the options of training.loop.fit (`directory` to checkpoint and
    resume there, `progress`, ...) and returns its summary. A mask made for another model is a
    TicketlabError.
    """
    return fit(model, data, cfg, constraint=MaskedTraining(model, mask, kernels), **options)
