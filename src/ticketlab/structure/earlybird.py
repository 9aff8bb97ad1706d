"""Early-bird tickets (You et al. 2020): channel masks that stop changing early in training.

At every epoch end and for each pruning ratio p, the channel mask keeps the units whose
score (default BatchNorm |γ|) is above the global p-quantile, at least one per channel
group (sparsity.selection.select with empty_layer="keep"). The ticket for p is drawn at
the first epoch where the newest of the last `window` masks differs from each of the
others in under `threshold` of its flags.

    result = earlybird(DataConfig(name="digits"), ModelConfig(name="vgg11"),
                       TrainConfig(steps="20ep", bn_l1=1e-4), (0.3, 0.5, 0.7), Runtime())
    result.found  # {0.3: 6, 0.5: 7, 0.7: None}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketlab import paths
from ticketlab.config import DataConfig, ModelConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.sparsity.criteria import ScoreContext, get_criterion
from ticketlab.sparsity.mask import prunable_names
from ticketlab.sparsity.schedules import check_sparsity
from ticketlab.sparsity.selection import select
from ticketlab.stage import Stage
from ticketlab.store import Run, atomic_torch_save, atomic_write_json, read_json
from ticketlab.training.stage import TrainRun, run_training, train_identity

WINDOW = 5
THRESHOLD = 0.1

SaveTicket = Callable[[float, int, dict[str, torch.Tensor]], None]  # (ratio, epoch, state_dict)


def mask_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The normalised Hamming distance of two flag vectors: the fraction of flags that differ."""
    if a.shape != b.shape:
        raise TicketlabError(f"masks of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be compared")
    return (a != b).float().mean().item()


def is_stable(masks: Sequence[torch.Tensor], window: int = WINDOW, threshold: float = THRESHOLD) -> bool:
    """Whether the newest of the last `window` masks is within `threshold` of each of the others."""
    if len(masks) < window:
        return False
    *others, newest = masks[-window:]
    return all(mask_distance(newest, other) < threshold for other in others)


def distance_matrix(masks: Sequence[torch.Tensor]) -> list[list[float]]:
    """Every pair's mask distance (symmetric, zero diagonal)."""
    return [[mask_distance(a, b) for b in masks] for a in masks]


class EarlyBird:
    """An EpochCallback drawing early-bird tickets for several pruning ratios at once.

    It keeps every epoch's mask (for the distance heatmap; the rule reads the last `window`)
    and persists them in the trainer's resume points, so a resumed run detects exactly as
    an uninterrupted one. With `stop`, training stops once every ratio has its ticket;
    `save` is called with (ratio, epoch, state_dict) when a ticket is drawn.
    """

    def __init__(self, ratios: Sequence[float], criterion: str = "bn_scale", *, threshold: float = THRESHOLD,
                 window: int = WINDOW, stop: bool = False, save: SaveTicket | None = None):
        if not ratios:
            raise TicketlabError("early-bird needs at least one pruning ratio, e.g. 0.3,0.5,0.7")
        for ratio in ratios:
            check_sparsity(ratio, "pruning ratio")
        if len(set(ratios)) != len(ratios):
            raise TicketlabError(f"pruning ratios {list(ratios)} repeat; expected each once")
        if window < 2:
            raise TicketlabError(f"the early-bird window must hold at least 2 masks, got {window}")
        self.criterion = get_criterion(criterion)
        if not self.criterion.structured or self.criterion.needs_data or self.criterion.needs_init:
            raise TicketlabError(f"criterion {criterion!r} cannot draw early birds: expected a structured criterion "
                                 "scoring from the weights alone, such as bn_scale or l1_norm")
        self.ratios = [float(r) for r in ratios]
        self.threshold, self.window, self.stop, self.save = threshold, window, stop, save
        self.epochs: list[int] = []
        self.masks: dict[float, list[torch.Tensor]] = {r: [] for r in self.ratios}
        self.found: dict[float, int | None] = {r: None for r in self.ratios}

    def channel_masks(self, model: nn.Module) -> dict[float, torch.Tensor]:
        """Per ratio, the keep-flag of every unit of every channel group, concatenated."""
        # Reseeded each epoch, random_units draws one fixed mask: a control that is "found" once the window fills.
        context = ScoreContext(model, prunable_names(model), generator=torch.Generator().manual_seed(0))
        scores = self.criterion.scores(context)
        return {ratio: torch.cat([flags.flatten() for flags in select(scores, ratio, empty_layer="keep").values()])
                for ratio in self.ratios}

    def on_epoch_end(self, epoch: int, model: nn.Module) -> bool:
        self.epochs.append(epoch)
        for ratio, mask in self.channel_masks(model).items():
            self.masks[ratio].append(mask)
            if self.found[ratio] is None and is_stable(self.masks[ratio], self.window, self.threshold):
                self.found[ratio] = epoch
                if self.save is not None:
                    self.save(ratio, epoch, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        return self.stop and all(epoch is not None for epoch in self.found.values())

    def distances(self, ratio: float) -> list[list[float]]:
        """The epoch × epoch mask-distance matrix of a ratio (rows and columns: self.epochs)."""
        return distance_matrix(self.masks[ratio])

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs), "masks": {r: list(m) for r, m in self.masks.items()},
                "found": dict(self.found)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if sorted(state["found"]) != sorted(self.ratios):
            raise TicketlabError(f"the saved early-bird state is for ratios {sorted(state['found'])}, "
                                 f"not {self.ratios}")
        self.epochs = list(state["epochs"])
        self.masks = {r: list(state["masks"][r]) for r in self.ratios}
        self.found = {r: state["found"][r] for r in self.ratios}


@dataclass
class EarlyBirdResult(Stage):
    """An early-bird run: a dense training with a detector, and per ratio the epoch its ticket was
    drawn (None: never) and the fraction of the full training that cost."""

    KIND = "earlybird"
    ARTIFACTS = TrainRun.ARTIFACTS + (paths.EARLYBIRD, paths.DISTANCES)
    MAY_WRITE = TrainRun.MAY_WRITE  # the tickets' weights among them
    describe = staticmethod(TrainRun.describe)

    @functools.cached_property
    def _found(self) -> dict[str, Any]:
        return read_json(self.run.file(paths.EARLYBIRD))

    @property
    def found(self) -> dict[float, int | None]:
        return {float(r): entry["epoch"] for r, entry in self._found["found"].items()}

    @property
    def cost(self) -> dict[float, float | None]:
        return {float(r): entry["cost"] for r, entry in self._found["found"].items()}

    @property
    def total_epochs(self) -> int:
        return self._found["total_epochs"]

    def ticket_checkpoint(self, ratio: float) -> Path:
        """The weights of the epoch where the ratio's ticket was drawn ({"model": state_dict, "epoch": n})."""
        return self.run.file(paths.checkpoint(paths.ticket(ratio)))

    def as_training(self, data: DataConfig, model: ModelConfig, training: TrainConfig) -> TicketTraining:
        """This run as the dense training it is (pass the configs it was run with), each drawn
        ticket's weights being the checkpoint of its epoch (`7ep`): the prune, shrink and retrain
        stages then take an early-bird ticket like any saved step."""
        tickets = {f"{epoch}ep": ratio for ratio, epoch in self.found.items() if epoch is not None}
        return TicketTraining(self.run, data, model, training, summary=self.summary, cached=self.cached,
                              tickets=tickets)


@dataclass
class TicketTraining(TrainRun):
    """An early-bird run read as a training run; `tickets` maps a ticket's epoch (`7ep`) to its ratio."""

    tickets: dict[str, float] = field(default_factory=dict, kw_only=True)

    def checkpoint_name(self, step: str) -> str:
        name = super().checkpoint_name(step)
        if name in self.tickets and not self.run.file(paths.checkpoint(name)).exists():
            return paths.ticket(self.tickets[name])
        return name


def earlybird_run(data: DataConfig, model: ModelConfig, training: TrainConfig, ratios: Sequence[float],
                  runs_dir: str | None = None, criterion: str = "bn_scale", threshold: float = THRESHOLD,
                  stop: bool = False, data_dir: str | None = None) -> Run:
    """The early-bird run these inputs (and the data found for them in data_dir) name, finished or not."""
    settings = {"ratios": [float(r) for r in ratios], "criterion": criterion, "threshold": threshold, "stop": stop}
    return EarlyBirdResult.run_for({**train_identity(data, model, training, data_dir), "earlybird": settings},
                                   runs_dir)


def earlybird(data: DataConfig, model: ModelConfig, training: TrainConfig, ratios: Sequence[float],
              runtime: Runtime = Runtime(), criterion: str = "bn_scale", threshold: float = THRESHOLD,
              stop: bool = False) -> EarlyBirdResult:
    """Train with an EarlyBird detector in a cached run of its own, or return the finished one.

    Writes earlybird.json (per ratio: the epoch found or null, and epoch / total epochs),
    distances.json (the epoch × epoch mask distances per ratio, which the report draws as
    heatmaps), and checkpoints/earlybird-<ratio>.pt of each ticket.
    """
    result = EarlyBirdResult(earlybird_run(data, model, training, ratios, runtime.runs_dir, criterion, threshold, stop,
                                           runtime.data_dir))
    run = result.run
    settings = run.identity["earlybird"]

    def save(ratio: float, epoch: int, weights: dict[str, torch.Tensor]) -> None:
        atomic_torch_save({"model": weights, "epoch": epoch}, run.file(paths.checkpoint(paths.ticket(ratio))))

    detector = EarlyBird(ratios, criterion, threshold=threshold, stop=stop, save=save)

    def write(summary: dict[str, Any]) -> None:
        total = -(-summary["iterations"] // summary["iterations_per_epoch"])
        found = {f"{r:g}": {"epoch": e, "cost": e / total if e is not None else None}
                 for r, e in detector.found.items()}
        atomic_write_json(run.file(paths.EARLYBIRD), {**settings, "total_epochs": total,
                                             "stopped_early_at": summary["stopped_early_at"], "found": found})
        atomic_write_json(run.file(paths.DISTANCES), {"epochs": detector.epochs,
                                                "distances": {f"{r:g}": detector.distances(r) for r in detector.ratios}})
        summary["earlybird"] = found

    run_training(result, data, model, training, runtime, callbacks=[detector], before_finish=write)
    return result
