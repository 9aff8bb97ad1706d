"""Evaluators by whole forward passes: of the masked model as it is, or after training each candidate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import TrainConfig
from ticketlab.data import Split
from ticketlab.search.evaluators.base import Evaluator
from ticketlab.search.space import SearchSpace
from ticketlab.sparsity.mask import Mask
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
    """Trains each candidate briefly from the checkpoint under its mask, then scores it."""

    def __init__(self, model: nn.Module, weights: dict[str, torch.Tensor], space: SearchSpace, x: torch.Tensor,
                 y: torch.Tensor, metric: str, steps: int, cfg: TrainConfig, data: Split):
        super().__init__(space, x, y, metric)
        self.model, self.weights = model, weights
        self.steps, self.cfg, self.data = steps, cfg, data

    def _score(self, mask: Mask) -> float:
        self.model.load_state_dict(self.weights)  # copies: the last candidate's training moved every weight
        self.train(mask)
        self.model.eval()
        return self.forward_score(self.model)

    def train(self, mask: Mask) -> None:
        constraint = MaskedTraining(self.model, mask)
        optimizer = build_optimizer(self.model.parameters(), self.cfg)
        constraint.enforce(optimizer)
        order_generator = torch.Generator().manual_seed(self.cfg.seed)
        n, batch = len(self.data.y), self.cfg.batch_size
        per_epoch = -(-n // batch)
        device = self.data.x.device
        self.model.train()
        # Dropout draws from the global generator: seeding it gives a mask the same score every time.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed)
            for step in range(self.steps):
                if step % per_epoch == 0:
                    order = torch.randperm(n, generator=order_generator).to(device)
                index = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
                x, y = self.data.x.index_select(0, index), self.data.y.index_select(0, index)  # as the Trainer gathers
                loss = F.cross_entropy(self.model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                constraint.before_step()
                optimizer.step()
