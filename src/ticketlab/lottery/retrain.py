"""Retraining under a mask as a cached, resumable stage: what every lottery level and control does.

A retraining starts from given weights (rewound, reinitialised, or trained) at a given
iteration of the dense run's schedule, with the mask held by masked training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ticketlab import paths
from ticketlab.config import Runtime
from ticketlab.data import Dataset
from ticketlab.sparsity.mask import Mask
from ticketlab.sparsity.masked import MaskedTraining
from ticketlab.stage import Stage
from ticketlab.training.loop import Trainer, resumed_sparse_layers
from ticketlab.training.stage import TrainRun, apply_runtime, init_model
from ticketlab.training.steps import Step


@dataclass
class Setting:
    """What all retrainings of one dense run share: its configs, its data on the device, the runtime."""

    dense: TrainRun
    data: Dataset
    device: torch.device
    runtime: Runtime

    @classmethod
    def of(cls, dense: TrainRun, runtime: Runtime) -> Setting:
        device = apply_runtime(runtime)
        data = dense.dataset(runtime, device)
        return cls(dense, data, device, runtime)

    def model(self, seed: int | None = None) -> nn.Module:
        """A fresh model on the device, initialised by `seed` (default: the dense run's seed)."""
        seed = self.dense.training.seed if seed is None else seed
        return init_model(self.dense.model_config, self.data, seed).to(self.device)

    def iteration(self, step: str) -> int:
        return Step.parse(step).to_iterations(self.dense.summary["iterations_per_epoch"])


@dataclass
class Retrained(Stage):
    """A retraining under a mask: its run, mask, summary and checkpoints. Its kinds are below."""

    ARTIFACTS = TrainRun.ARTIFACTS + (paths.MASK,)
    MAY_WRITE = TrainRun.MAY_WRITE

    def mask(self) -> Mask:
        return Mask.load(self.run.file(paths.MASK))

    @staticmethod
    def what(identity: dict[str, Any]) -> str:
        """What was retrained, in a few words, from the run's identity."""
        raise NotImplementedError

    @classmethod
    def describe(cls, hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        remaining = f", {100 * summary['remaining']:.1f}% left" if "remaining" in summary else ""
        return cls.what(hparams["identity"]) + remaining, summary.get("best", {})


class LevelRun(Retrained):
    """A level of iterative magnitude pruning, retrained from the rewind step."""

    KIND = "level"

    @staticmethod
    def what(identity: dict[str, Any]) -> str:
        return f"level {identity['level']} of {identity['dense']}"


class ControlRun(Retrained):
    """A control of a lottery level (its mask or its start changed), retrained."""

    KIND = "control"

    @staticmethod
    def what(identity: dict[str, Any]) -> str:
        return f"{identity['control']} of {identity['level']}"


class TicketRun(Retrained):
    """A prune or search run's mask, retrained from the rewind step (a comparison's ticket)."""

    KIND = "ticket"

    @staticmethod
    def what(identity: dict[str, Any]) -> str:
        return f"retrained {identity['mask']}"


def retrain(made: Retrained, setting: Setting, weights: dict[str, torch.Tensor], mask: Mask, *,
            start_iteration: int, hparams: dict[str, Any], extra: dict[str, Any] | None = None) -> Retrained:
    """Train `weights` under `mask` from `start_iteration` to the dense run's end, cached as `made`'s run."""
    run = made.run

    def prepare() -> tuple[dict[str, Any], Trainer]:
        model = setting.model()
        model.load_state_dict(weights)
        mask.apply(model)
        # An interrupted run resumes on the kernels it started on (a forced one starts afresh).
        started = None if setting.runtime.force else resumed_sparse_layers(run.path)
        kernels = setting.runtime.kernels if started is None else started
        trainer = Trainer(model, setting.data, setting.dense.training, run.path, setting.runtime.progress,
                          label=run.name, constraint=MaskedTraining(model, mask, kernels),
                          start_iteration=start_iteration)
        # The dense run's schedule it follows is recorded too (a study's board reads its steps).
        return {**hparams, "train": dataclasses.asdict(setting.dense.training)}, trainer

    def write(trainer: Trainer) -> dict[str, Any]:
        mask.save(run.file(paths.MASK))
        summary = trainer.run()
        summary.update(remaining=mask.kept() / mask.total(), kept=mask.kept(), total=mask.total(),
                       start_iteration=start_iteration, **(extra or {}))
        return summary

    made.produce(setting.runtime.force, prepare, write)
    return made

