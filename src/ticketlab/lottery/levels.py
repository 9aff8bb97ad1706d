"""Iterative magnitude pruning (Frankle & Carbin 2019) as a chain of cached levels.

Level 0 is the dense training run. Level L prunes the weights of level L-1's trained
network (criterion and scope as configured) down to a cumulative sparsity 1-(1-rate)^L,
resets the survivors to the rewind point of the dense run (`0it`: the initialisation;
`500it`, `3ep`: late rewinding, Frankle et al. 2020) and retrains them under the mask from
that point to the end of the dense schedule. Each level is a stage named by the dense run,
the lottery settings and the level number, so asking for more levels later reuses the
ones done, and an interrupted level resumes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ticketlab.config import LotteryConfig, Runtime, TicketlabError, non_default
from ticketlab.lottery.retrain import LevelRun, Retrained, Setting, retrain
from ticketlab.sparsity.criteria import ScoreContext, get_criterion
from ticketlab.sparsity.mask import Mask, output_layer_names
from ticketlab.sparsity.selection import score_and_select
from ticketlab.store import Run
from ticketlab.training.stage import TrainRun


@dataclass
class Level:
    number: int
    summary: dict[str, Any]  # training summary plus `remaining` (fraction of prunable weights kept)
    retrained: Retrained | None  # None for level 0, the dense run

    @property
    def remaining(self) -> float:
        return self.summary.get("remaining", 1.0)


@dataclass
class Lottery:
    dense: TrainRun
    config: LotteryConfig
    levels: list[Level]

    def level(self, number: int) -> Level:
        if not 0 <= number < len(self.levels):
            raise TicketlabError(f"level {number} does not exist: this lottery has levels 0 to {len(self.levels) - 1}")
        return self.levels[number]


def check_settings(cfg: LotteryConfig) -> None:
    """What can be checked before the dense run trains: numbers in range, known names."""
    if cfg.levels < 1:
        raise TicketlabError(f"levels must be at least 1, got {cfg.levels}")
    if not 0 < cfg.rate < 1:
        raise TicketlabError(f"rate must be in (0, 1), got {cfg.rate}")
    if cfg.output_rate is not None and not 0 <= cfg.output_rate < 1:
        raise TicketlabError(f"output rate must be in [0, 1), got {cfg.output_rate}")
    if cfg.scope not in ("global", "layerwise"):
        raise TicketlabError(f"scope must be global or layerwise, got {cfg.scope!r}")
    if get_criterion(cfg.criterion).structured:
        raise TicketlabError(f"criterion {cfg.criterion} prunes whole units; the lottery prunes single weights")


def check_lottery(cfg: LotteryConfig, dense: TrainRun) -> None:
    check_settings(cfg)
    if dense.checkpoint_name(cfg.rewind) not in dense.summary["checkpoints"]:
        raise TicketlabError(f"the dense run kept no checkpoint at {cfg.rewind}; train it with --save-at {cfg.rewind}")
    if dense.checkpoint_name(cfg.rewind) == dense.checkpoint_name(dense.training.steps):
        raise TicketlabError(f"rewind step {cfg.rewind} is the end of training: nothing would be retrained")


def level_run(dense: TrainRun, cfg: LotteryConfig, number: int, runtime: Runtime) -> Run:
    settings = {k: v for k, v in non_default(cfg).items() if k != "levels"}  # more levels: same names
    return LevelRun.run_for({"dense": dense.run.name, "lottery": settings, "level": number}, runtime.runs_dir)


def cumulative(rate: float, level: int) -> float:
    return 1 - (1 - rate) ** level


def next_mask(setting: Setting, cfg: LotteryConfig, previous: dict[str, torch.Tensor], mask: Mask,
              number: int) -> Mask:
    """Prune level `number`'s share from the previous level's trained weights."""
    model = setting.model()
    model.load_state_dict(previous)
    criterion = get_criterion(cfg.criterion)
    context = ScoreContext(
        model=model, names=list(mask), mask=mask, generator=torch.Generator().manual_seed(number),
        init=setting.dense.state_dict("0it") if criterion.needs_init else None,
        batches=[(setting.data.val.x[:64], setting.data.val.y[:64])] if criterion.needs_data else None,
    )
    output_sparsity = None if cfg.output_rate is None else cumulative(cfg.output_rate, number)
    new = score_and_select(context, criterion, cumulative(cfg.rate, number), scope=cfg.scope,
                           output_sparsity=output_sparsity)
    outputs = set(output_layer_names(model))
    hidden_kept = sum(int(new[n].sum()) for n in new if n not in outputs)
    hidden_layers = sum(1 for n in new if n not in outputs)
    if new == mask or hidden_kept <= hidden_layers:
        raise TicketlabError(
            f"level {number} cannot prune further: {mask.kept()} of {mask.total()} weights remain at level "
            f"{number - 1}; ask for fewer levels or a smaller rate"
        )
    return new


def lottery(dense: TrainRun, cfg: LotteryConfig = LotteryConfig(), runtime: Runtime = Runtime()) -> Lottery:
    """Run (or reuse) levels 1..cfg.levels of iterative pruning with rewinding on a dense run."""
    check_lottery(cfg, dense)
    levels = [Level(0, dict(dense.summary), None)]
    setting: Setting | None = None
    mask: Mask | None = None
    for number in range(1, cfg.levels + 1):
        run = level_run(dense, cfg, number, runtime)
        if run.reusable(runtime.force):
            done = LevelRun(run, summary=run.summary(), cached=True)
            levels.append(Level(number, done.summary, done))
            mask = None  # loaded from the level's run only if a later level needs it
            continue
        setting = setting or Setting.of(dense, runtime)
        if mask is None:
            mask = levels[-1].retrained.mask() if levels[-1].retrained else Mask.ones(setting.model())
        previous = levels[-1].retrained.state_dict("final") if levels[-1].retrained else dense.state_dict("final")
        mask = next_mask(setting, cfg, previous, mask, number)
        hparams = {"dense": dense.run.name, "lottery": dataclasses.asdict(cfg), "level": number}
        done = retrain(LevelRun(run), setting, dense.state_dict(cfg.rewind), mask, start_iteration=setting.iteration(cfg.rewind),
                       hparams=hparams, extra={"level": number})
        levels.append(Level(number, done.summary, done))
    return Lottery(dense, cfg, levels)

