"""Preset sections as studies: the stages of a section that do not depend on each other, as nodes
(see study.py). The section, run afterwards, finds them done."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ticketlab.config import DataConfig, LotteryConfig, ModelConfig, Runtime, TrainConfig
from ticketlab.experiments.study import Node
from ticketlab.lottery.controls import control
from ticketlab.lottery.experiment import control_levels_of, replicate_training
from ticketlab.lottery.levels import lottery
from ticketlab.training.stage import train, train_run_handle


def lottery_nodes(data: DataConfig, model: ModelConfig, training: TrainConfig, cfg: LotteryConfig,
                  runtime: Runtime, *, replicates: int = 1, controls: Sequence[str] = (),
                  control_levels: Sequence[int] | None = None) -> list[Node]:
    """Each replicate's dense training, then its chain of levels (each level needs the one
    before), then each control of each level, which needs only that replicate's chain."""
    quiet = dataclasses.replace(runtime, progress=False)
    levels = control_levels_of(cfg, control_levels)
    nodes = []
    for replicate in range(replicates):
        seeded = replicate_training(training, cfg, replicate)
        dense = train_run_handle(data, model, seeded, runtime.runs_dir).run.name
        chain = f"{dense}: lottery of {cfg.levels} levels"
        nodes += [Node(dense, train, (data, model, seeded, quiet)),
                  Node(chain, _levels, (data, model, seeded, cfg, quiet), (dense,))]
        nodes += [Node(f"{dense}: {name} of level {level}", _control, (data, model, seeded, cfg, level, name, quiet),
                       (chain,)) for level in levels for name in controls]
    return nodes


def _levels(data: DataConfig, model: ModelConfig, training: TrainConfig, cfg: LotteryConfig, runtime: Runtime) -> None:
    lottery(train(data, model, training, runtime), cfg, runtime)


def _control(data: DataConfig, model: ModelConfig, training: TrainConfig, cfg: LotteryConfig, level: int, name: str,
             runtime: Runtime) -> None:
    control(lottery(train(data, model, training, runtime), cfg, runtime), level, name, runtime)
