"""A lottery experiment: replicates of dense training + levels, with controls on chosen levels."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from ticketlab.config import DataConfig, LotteryConfig, ModelConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.lottery.controls import CONTROLS, control
from ticketlab.lottery.levels import Lottery, check_settings, lottery
from ticketlab.lottery.retrain import Retrained
from ticketlab.training.stage import train, with_checkpoints


@dataclass
class LotteryExperiment:
    config: LotteryConfig
    lotteries: list[Lottery]  # one per replicate (seed, seed + 1, ...)
    controls: dict[tuple[int, int, str], Retrained] = field(default_factory=dict)  # (replicate, level, name)


def replicate_training(training: TrainConfig, cfg: LotteryConfig, replicate: int) -> TrainConfig:
    """A replicate's dense training: seed + replicate, keeping the init (criteria may compare with
    it) and the rewind step."""
    return dataclasses.replace(with_checkpoints(training, ["0it", cfg.rewind]), seed=training.seed + replicate)


def control_levels_of(cfg: LotteryConfig, control_levels: Sequence[int] | None) -> list[int]:
    """The levels controls run on (default: every pruned level), checked to exist."""
    levels = list(control_levels) if control_levels is not None else list(range(1, cfg.levels + 1))
    outside = [lv for lv in levels if not 1 <= lv <= cfg.levels]
    if outside:
        raise TicketlabError(f"controls on level(s) {', '.join(map(str, outside))}: this lottery has levels 1 to "
                             f"{cfg.levels}")
    return levels


def check_experiment(cfg: LotteryConfig, controls: Sequence[str], control_levels: Sequence[int] | None) -> list[int]:
    """The settings, the controls' names and their levels, checked before anything trains; the levels."""
    check_settings(cfg)
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise TicketlabError(f"unknown control(s) {', '.join(unknown)}: expected some of {', '.join(CONTROLS)}")
    return control_levels_of(cfg, control_levels)


def run_lottery(data: DataConfig, model: ModelConfig, training: TrainConfig, cfg: LotteryConfig = LotteryConfig(),
                runtime: Runtime = Runtime(), *, replicates: int = 1, controls: Sequence[str] = (),
                control_levels: Sequence[int] | None = None) -> LotteryExperiment:
    """Dense training and `cfg.levels` levels for each of `replicates` seeds, then the controls.

    Controls run on `control_levels` (default: every pruned level). Everything is cached:
    rerunning with more levels, replicates or controls does only the new work.
    """
    if replicates < 1:
        raise TicketlabError(f"replicates must be at least 1, got {replicates}")
    levels = check_experiment(cfg, controls, control_levels)  # before the dense run trains
    experiment = LotteryExperiment(cfg, [])
    for replicate in range(replicates):
        seeded = replicate_training(training, cfg, replicate)
        experiment.lotteries.append(lottery(train(data, model, seeded, runtime), cfg, runtime))
    for replicate, result in enumerate(experiment.lotteries):
        for level in levels:
            for name in controls:
                experiment.controls[(replicate, level, name)] = control(result, level, name, runtime)
    return experiment
