"""Retraining under a mask as a cached, resumable stage: what every lottery level and control does.

A retraining starts from given weights (rewound, reinitialised, or trained) at a given
iteration of the dense run's schedule, with the mask held by masked training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ticketlab import paths
from ticketlab.config import Runtime
from ticketlab.data import Dataset, load_data
from ticketlab.sparsity.mask import Mask
from ticketlab.sparsity.masked import MaskedTraining
from ticketlab.store import StageRun, Run, describes
from ticketlab.training.loop import Trainer
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
        return cls(dense, load_data(dense.data, data_dir=runtime.data_dir, device=device), device, runtime)

    def model(self, seed: int | None = None) -> nn.Module:
        """A fresh model on the device, initialised by `seed` (default: the dense run's seed)."""
        seed = self.dense.training.seed if seed is None else seed
        return init_model(self.dense.model_config, self.data, seed).to(self.device)

    def iteration(self, step: str) -> int:
        return Step.parse(step).to_iterations(self.dense.summary["iterations_per_epoch"])


@dataclass
class Retrained(StageRun):
    """A finished retraining: its run, mask, summary and checkpoints."""

    def mask(self) -> Mask:
        return Mask.load(self.run.file(paths.MASK))


@describes("level", "control", "ticket")
def describe_retrained(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
    identity = hparams["identity"]
    remaining = f", {100 * summary['remaining']:.1f}% left" if "remaining" in summary else ""
    what = {"level": lambda: f"level {identity['level']} of {identity['dense']}",
            "control": lambda: f"{identity['control']} of {identity['level']}",
            "ticket": lambda: f"retrained {identity['mask']}"}[hparams["kind"]]()
    return what + remaining, summary.get("best", {})


def retrain(run: Run, setting: Setting, weights: dict[str, torch.Tensor], mask: Mask, *,
            start_iteration: int, hparams: dict[str, Any], extra: dict[str, Any] | None = None) -> Retrained:
    """Train `weights` under `mask` from `start_iteration` to the dense run's end, cached as `run`."""
    def prepare() -> tuple[dict[str, Any], Trainer]:
        model = setting.model()
        model.load_state_dict(weights)
        mask.apply(model)
        return hparams, Trainer(model, setting.data, setting.dense.training, run.path, setting.runtime.progress,
                                label=run.name, constraint=MaskedTraining(model, mask),
                                start_iteration=start_iteration)

    def write(trainer: Trainer) -> dict[str, Any]:
        mask.save(run.file(paths.MASK))
        summary = trainer.run()
        summary.update(remaining=mask.kept() / mask.total(), kept=mask.kept(), total=mask.total(),
                       start_iteration=start_iteration, **(extra or {}))
        return summary

    summary, cached = run.produce(setting.runtime.force, prepare, write)
    return Retrained(run, summary=summary, cached=cached)

