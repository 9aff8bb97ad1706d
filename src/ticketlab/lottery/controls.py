"""The controls that tell a winning ticket from luck: branches off a lottery level, run on demand.

| control | mask | starting weights | trained from |
| --- | --- | --- | --- |
| reinit | the level's | a fresh random init (another seed) | the rewind step, like the ticket |
| random_mask | random, same count per layer | rewound | the rewind step |
| reinit_survivors | the level's | per layer, drawn from the surviving rewound values (LTH appendix F.3) | the rewind step |
| finetune | the level's | the previous level's trained weights | step 0, the full schedule (seed 003 exp. 1) |
| scratch | the level's | a fresh random init | step 0, the full schedule (Liu et al.'s Scratch-E) |

With rewinding to `0it`, reinit and scratch train the same network the same way; they
differ under late rewinding, where reinit keeps the ticket's shorter schedule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ticketlab.config import Runtime, TicketlabError
from ticketlab.lottery.levels import Lottery
from ticketlab.lottery.retrain import ControlRun, Retrained, Setting, retrain
from ticketlab.sparsity.mask import Mask
from ticketlab.store import Run

REINIT_SEED_OFFSET = 1_000  # fresh inits use the dense seed plus this: distinct, and reproducible

Start = tuple[dict[str, torch.Tensor], Mask, int]  # weights, mask, first iteration


def _reinit(lottery: Lottery, level: int, setting: Setting, generator: torch.Generator) -> Start:
    fresh = setting.model(lottery.dense.training.seed + REINIT_SEED_OFFSET).state_dict()
    return fresh, lottery.levels[level].retrained.mask(), setting.iteration(lottery.config.rewind)


def _scratch(lottery: Lottery, level: int, setting: Setting, generator: torch.Generator) -> Start:
    fresh, mask, _ = _reinit(lottery, level, setting, generator)
    return fresh, mask, 0


def _random_mask(lottery: Lottery, level: int, setting: Setting, generator: torch.Generator) -> Start:
    rewind = lottery.config.rewind
    shuffled = lottery.levels[level].retrained.mask().shuffled(generator)
    return lottery.dense.state_dict(rewind), shuffled, setting.iteration(rewind)


def _reinit_survivors(lottery: Lottery, level: int, setting: Setting, generator: torch.Generator) -> Start:
    mask = lottery.levels[level].retrained.mask()
    weights = lottery.dense.state_dict(lottery.config.rewind)
    for name, keep in mask.items():
        survivors = weights[name][keep]
        draws = torch.randint(len(survivors), (len(survivors),), generator=generator)
        resampled = weights[name].clone()
        resampled[keep] = survivors[draws]
        weights[name] = resampled
    return weights, mask, setting.iteration(lottery.config.rewind)


def _finetune(lottery: Lottery, level: int, setting: Setting, generator: torch.Generator) -> Start:
    previous = lottery.levels[level - 1].retrained
    trained = previous.state_dict("final") if previous else lottery.dense.state_dict("final")
    return trained, lottery.levels[level].retrained.mask(), 0


CONTROLS: dict[str, Callable[[Lottery, int, Setting, torch.Generator], Start]] = {
    "reinit": _reinit, "random_mask": _random_mask, "reinit_survivors": _reinit_survivors,
    "finetune": _finetune, "scratch": _scratch,
}


def control_run(level_run: str, name: str, runs_dir: str | None) -> Run:
    """The run of control `name` of the level run named `level_run`, finished or not."""
    return ControlRun.run_for({"level": level_run, "control": name}, runs_dir)


def control(lottery: Lottery, level: int, name: str, runtime: Runtime = Runtime()) -> Retrained:
    """Run (or reuse) control `name` on level `level` of a lottery."""
    if name not in CONTROLS:
        raise TicketlabError(f"unknown control {name!r}: expected one of {', '.join(CONTROLS)}")
    ticket = lottery.level(level).retrained
    if ticket is None:
        raise TicketlabError("controls branch off a pruned level (1 or more), not the dense level 0")
    run = control_run(ticket.run.name, name, runtime.runs_dir)
    if run.reusable(runtime.force):
        return ControlRun(run, summary=run.summary(), cached=True)
    setting = Setting.of(lottery.dense, runtime)
    generator = torch.Generator().manual_seed(lottery.dense.training.seed * 1_000 + level)
    weights, mask, start = CONTROLS[name](lottery, level, setting, generator)
    return retrain(ControlRun(run), setting, weights, mask, start_iteration=start,
                   hparams={"level": ticket.run.name, "control": name}, extra={"level": level, "control": name})
