"""Evaluators by whole forward passes: of the masked model as it is, or after training each candidate."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import TrainConfig, check_kernels
from ticketlab.data import Split
from ticketlab.search.evaluators.base import Evaluator
from ticketlab.search.space import SearchSpace
from ticketlab.sparsity.mask import Mask
from ticketlab.sparsity.kernels import dense_part, sparse_layers, use_kernels
from ticketlab.sparsity.masked import MaskedTraining
from ticketlab.training.optim import build_optimizer


class ForwardEvaluator(Evaluator):
    """One forward pass of the model per score; only the parameters whose mask changed are rewritten."""

    def __init__(self, model: nn.Module, weights: dict[str, torch.Tensor], space: SearchSpace,
                 x: torch.Tensor, y: torch.Tensor, metric: str):
        super().__init__(space, x, y, metric)
        self.model = model
        self.weights = weights
        model.load_state_dict(weights)
        model.eval()
        self.params = dict(model.named_parameters())
        self.written: dict[str, torch.Tensor] = {}  # the mask each parameter now holds

    def write(self, mask: Mask) -> None:
        with torch.no_grad():
            for name, keep in mask.items():
                if name not in self.written or not torch.equal(self.written[name], keep):
                    param = self.params[name]
                    param.copy_(self.weights[name].to(param.device) * keep.to(param.device))
                    self.written[name] = keep

    def _score(self, mask: Mask) -> float:
        self.write(mask)
        return self.forward_score(self.model)


class TrainedEvaluator(Evaluator):
    """Trains each candidate briefly from the checkpoint under its mask, then scores it.

    `kernels` (sparsity.kernels: dense, sparse or auto) chooses the Linear layers each candidate
    trains on sparse kernels; those candidates train in a copy of the model, the rest in the model.
    """

    def __init__(self, model: nn.Module, weights: dict[str, torch.Tensor], space: SearchSpace, x: torch.Tensor,
                 y: torch.Tensor, metric: str, steps: int, cfg: TrainConfig, data: Split, kernels: str = "dense"):
        super().__init__(space, x, y, metric)
        check_kernels(kernels)
        self.model, self.weights = model, weights
        self.steps, self.cfg, self.data, self.kernels = steps, cfg, data, kernels

    def _score(self, mask: Mask) -> float:
        self.model.load_state_dict(self.weights)  # copies: a candidate trained in the model moved every weight
        model, chosen = self.model, sparse_layers(self.model, mask, self.kernels)
        if chosen:  # the model itself stays dense, for the next candidate's other layers
            model = copy.deepcopy(self.model)
            use_kernels(model, mask, chosen)
        self.train(model, dense_part(mask, chosen), native=bool(chosen))
        model.eval()
        return self.forward_score(model)

    def train(self, model: nn.Module, mask: Mask, native: bool = False) -> None:
        """`steps` iterations of `model` under `mask` (the part of the candidate's mask its dense
        layers hold; native: some layers on sparse kernels, so Adam's step may run in C)."""
        constraint = MaskedTraining(model, mask)
        optimizer = build_optimizer(model.parameters(), self.cfg, native=native)
        constraint.enforce(optimizer)
        order_generator = torch.Generator().manual_seed(self.cfg.seed)
        n, batch = len(self.data.y), self.cfg.batch_size
        per_epoch = -(-n // batch)
        device = self.data.x.device
        model.train()
        # Dropout draws from the global generator: seeding it gives a mask the same score every time.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed)
            for step in range(self.steps):
                if step % per_epoch == 0:
                    order = torch.randperm(n, generator=order_generator).to(device)
                index = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
                x, y = self.data.x.index_select(0, index), self.data.y.index_select(0, index)  # as the Trainer gathers
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                constraint.before_step()
                optimizer.step()
