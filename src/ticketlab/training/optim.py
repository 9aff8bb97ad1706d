"""Optimisers and learning-rate schedules built from a TrainConfig.

The schedule is a pure function of the iteration, so resuming needs no scheduler state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from ticketlab.config import TicketlabError, TrainConfig
from ticketlab.models.native import NativeKernels, native_kernels
from ticketlab.training.steps import Step, parse_steps

OPTIMIZERS = ("sgd", "adam", "adadelta")
SCHEDULES = ("constant", "multistep", "cosine")


# Numbers of a TrainConfig and the interval each must lie in: (low, high, low included, high included).
RANGES = {"lr": (0.0, math.inf, False, False), "momentum": (0.0, 1.0, True, False),
          "weight_decay": (0.0, math.inf, True, False), "l1": (0.0, math.inf, True, False),
          "l2": (0.0, math.inf, True, False), "bn_l1": (0.0, math.inf, True, False),
          "gamma": (0.0, math.inf, False, False)}


def check_numbers(cfg: TrainConfig) -> None:
    """Refuse a learning rate, momentum or penalty that cannot train: non-finite, or out of its range."""
    for name, (low, high, low_in, high_in) in RANGES.items():
        value = getattr(cfg, name)
        inside = math.isfinite(value) and (low <= value if low_in else low < value) and \
            (value <= high if high_in else value < high)
        if not inside:
            interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
            raise TicketlabError(f"{name} must be a finite number in {interval}, got {value}")
    if cfg.nesterov and (cfg.optimizer != "sgd" or cfg.momentum == 0):
        raise TicketlabError("nesterov needs --optimizer sgd and a momentum above 0")


class NativeAdam(torch.optim.Adam):
    """torch.optim.Adam whose step is one C call per parameter (models/native.py). For a model
    on sparse kernels, whose few kept weights leave PyTorch's own costs of a step (its
    optimiser's Python, about 100 µs for LeNet's six tensors) most of what a step costs
    (BENCHMARKS.md, "C kernels"). The numbers are Adam's, rounded in another order; the state is
    fused Adam's (the step count a float tensor), so a resume point written by either loads into
    the other."""

    def __init__(self, params: Iterable[torch.nn.Parameter], kernels: NativeKernels, lr: float,
                 weight_decay: float):
        super().__init__(params, lr=lr, weight_decay=weight_decay, fused=True)
        self.kernels = kernels

    def step(self, closure: None = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise TicketlabError("NativeAdam takes no closure")
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.contiguous_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.contiguous_format)
                self.kernels.adam_step(param, grad.contiguous(), state["exp_avg"], state["exp_avg_sq"], state["step"],
                                       lr, beta1, beta2, eps, decay)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            return super().zero_grad(set_to_none)
        for group in self.param_groups:  # without the profiler's record, which costs more than this
            for param in group["params"]:
                param.grad = None

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for state in self.state.values():  # the C step reads them as flat arrays
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = value.to(torch.float32).contiguous()


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig, native: bool = False
                    ) -> torch.optim.Optimizer:
    """The optimiser cfg names. `native`: Adam's step in C (NativeAdam) where the C kernels are
    built and every parameter is a contiguous float32 tensor on the CPU; Trainer asks for it for
    a model with layers on sparse kernels."""
    check_numbers(cfg)
    if native and cfg.optimizer == "adam":
        params = list(params)
        kernels = native_kernels()
        if kernels is not None and all(p.dtype is torch.float32 and p.device.type == "cpu" and p.is_contiguous()
                                       for p in params):
            return NativeAdam(params, kernels, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        # Fused: the plain step's sqrt of the exactly-zero moments of pruned weights is several
        # times slower than on other numbers on CPU; fused is faster for dense training too
        # (bench/masked_training.py, BENCHMARKS.md).
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise TicketlabError(f"unknown optimizer {cfg.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")


def lr_factor_fn(cfg: TrainConfig, iterations_per_epoch: int, total_iterations: int) -> Callable[[int], float]:
    """The factor by which the base LR is multiplied at a given iteration."""
    if cfg.schedule not in SCHEDULES:
        raise TicketlabError(f"unknown schedule {cfg.schedule!r}: expected one of {', '.join(SCHEDULES)}")
    milestones = sorted(s.to_iterations(iterations_per_epoch) for s in parse_steps(cfg.milestones))
    if cfg.schedule == "multistep" and not milestones:
        raise TicketlabError("schedule multistep needs --milestones, e.g. 80ep,120ep")
    if milestones and milestones[-1] >= total_iterations:
        raise TicketlabError(f"milestone {cfg.milestones} is not before the end of training ({cfg.steps} = "
                             f"{total_iterations} iterations); expected steps inside it")
    warmup = Step.parse(cfg.warmup).to_iterations(iterations_per_epoch)
    if warmup > total_iterations:
        raise TicketlabError(f"warmup {cfg.warmup} is longer than training ({cfg.steps} = {total_iterations} "
                             "iterations)")

    def factor(iteration: int) -> float:
        if cfg.schedule == "multistep":
            value = cfg.gamma ** sum(iteration >= m for m in milestones)
        elif cfg.schedule == "cosine":
            value = 0.5 * (1 + math.cos(math.pi * min(iteration, total_iterations) / max(total_iterations, 1)))
        else:
            value = 1.0
        if iteration < warmup:
            value *= (iteration + 1) / warmup
        return value

    return factor
