"""Retraining a shrunk network as a cached, resumable stage (Liu et al. 2019, "Rethinking the
value of network pruning").

`retrain_small(shrunk, mode, runtime)` trains the physically smaller network of a shrink run,
with no mask (it is smaller), on its dense run's data with the dense run's TrainConfig (or
`training`), starting from one of:

- `finetune`: the shrink run's weights (the kept slices of the trained ones), trained the
  whole schedule from step 0;
- `rewind`: the kept slices of the dense weights saved at `rewind` (default `0it`), trained
  from that step to the end, as a lottery ticket is;
- `scratch`: the small architecture freshly initialised (seed: the training seed plus
  SCRATCH_SEED_OFFSET), trained the whole schedule (Liu et al.'s Scratch-E).

The run keeps the dense run's checkpoints, metrics.csv, and the retrained small model as
model.safetensors (`ticketlab.load` reads it back).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketlab import paths
from ticketlab.config import Runtime, TicketlabError, TrainConfig, non_default
from ticketlab.lottery.retrain import Setting
from ticketlab.models.initializers import DEFAULT_INIT, initialize
from ticketlab.stage import Stage
from ticketlab.store import Run
from ticketlab.structure.saving import load, save_model, saved_units
from ticketlab.structure.stage import ShrinkRun
from ticketlab.structure.surgery import count_parameters, shrink
from ticketlab.training.loop import Trainer
from ticketlab.training.stage import TrainRun

MODES = ("finetune", "rewind", "scratch")
# Added to the training seed so a scratch init is not the dense init's draws cut to size.
SCRATCH_SEED_OFFSET = 1_000


@dataclass
class SmallRun(Stage):
    """A retraining of a shrunk network: its run, summary and checkpoints."""

    shrunk: ShrinkRun
    mode: str
    KIND = "small"
    ARTIFACTS = TrainRun.ARTIFACTS + (paths.MODEL,)
    MAY_WRITE = TrainRun.MAY_WRITE

    @property
    def model_file(self) -> Path:
        return self.run.file(paths.MODEL)

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        identity = hparams["identity"]
        return f"{identity['shrink']} retrained ({identity['mode']})", summary.get("best", {})


def small_run_handle(shrunk: ShrinkRun, mode: str, rewind: str = "0it",
                     training: TrainConfig | None = None, runs_dir: str | None = None) -> Run:
    """The run these inputs name, finished or not."""
    identity: dict[str, Any] = {"shrink": shrunk.run.name, "mode": mode}
    if mode == "rewind":
        identity["rewind"] = rewind
    if training is not None:
        identity["train"] = non_default(training)
    return SmallRun.run_for(identity, runs_dir)


def retrain_small(shrunk: ShrinkRun, mode: str, runtime: Runtime = Runtime(), *, rewind: str = "0it",
                  training: TrainConfig | None = None) -> SmallRun:
    """Train the shrink run's small network from the start `mode` names, or return the
    finished run with the same inputs. See the module docstring for the modes."""
    if mode not in MODES:
        raise TicketlabError(f"unknown retraining mode {mode!r}; expected one of {', '.join(MODES)}")
    run = small_run_handle(shrunk, mode, rewind, training, runtime.runs_dir)
    result = SmallRun(run, shrunk, mode)
    dense = shrunk.source.train
    training = training or dense.training

    def prepare() -> tuple[dict[str, Any], tuple[Trainer, nn.Module, dict[str, torch.Tensor], int]]:
        hparams = {"shrink": shrunk.run.name, "mode": mode, "rewind": rewind if mode == "rewind" else None,
                   "train": dataclasses.asdict(training)}
        return hparams, _set_up(shrunk, mode, rewind, training, run, runtime)

    def write(prepared: tuple[Trainer, nn.Module, dict[str, torch.Tensor], int]) -> dict[str, Any]:
        trainer, small, units, start_iteration = prepared
        summary = trainer.run()
        summary.update(mode=mode, shrink=shrunk.run.name, dense=dense.run.name, start_iteration=start_iteration,
                       parameters=count_parameters(small))
        save_model(small, run.file(paths.MODEL), units, dense.model_config)
        return summary

    result.produce(runtime.force, prepare, write)
    return result


def _set_up(shrunk: ShrinkRun, mode: str, rewind: str, training: TrainConfig, run: Run,
            runtime: Runtime) -> tuple[Trainer, nn.Module, dict[str, torch.Tensor], int]:
    """The trainer of the small network at its start, the network, its keep-flags and its first iteration."""
    dense = shrunk.source.train
    setting = Setting.of(dense, runtime)
    units = saved_units(shrunk.model_file)
    start_iteration = 0
    if mode == "rewind":
        weights = dense.state_dict(rewind)
        start_iteration = setting.iteration(rewind)
        model = setting.model()
        model.load_state_dict(weights)
        small = shrink(model, units)
    else:
        small = load(shrunk.model_file)
        if mode == "scratch":
            generator = torch.Generator().manual_seed(training.seed + SCRATCH_SEED_OFFSET)
            initialize(small, dense.model_config.init or DEFAULT_INIT, generator)
        small = small.to(setting.device)
    trainer = Trainer(small, setting.data, training, run.path, runtime.progress, label=run.name,
                      start_iteration=start_iteration)
    return trainer, small, units, start_iteration
