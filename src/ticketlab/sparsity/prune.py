"""The prune stage: a trained run's weights at some step, scored by a criterion, become a mask.

The mask is a cached stage like training: `prune(...)` named by the training run and the
pruning hyperparameters, returning at once when done. It also reports how the masked
network scores right away (no retraining), on validation and test data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ticketlab import paths
from ticketlab.config import PruneConfig, Runtime, TicketlabError, non_default
from ticketlab.data import Dataset
from ticketlab.models.tracing import channel_groups
from ticketlab.sparsity.criteria import CRITERIA, Criterion, ScoreContext, get_criterion
from ticketlab.sparsity.mask import Mask, prunable_names
from ticketlab.sparsity.selection import score_and_select
from ticketlab.stage import Stage
from ticketlab.store import atomic_write_text, note
from ticketlab.training.loop import evaluate
from ticketlab.training.stage import TrainRun, apply_runtime, init_model


@dataclass
class PruneRun(Stage):
    """A mask selected by a criterion from a training run's weights."""

    train: TrainRun
    config: PruneConfig
    KIND = "prune"
    ARTIFACTS = (paths.MASK, paths.MASK_REPORT)

    def mask(self) -> Mask:
        return Mask.load(self.run.file(paths.MASK))

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        cfg = hparams["prune"]
        return (f"{cfg['criterion']} {cfg['sparsity']:.3g}{' units' if cfg.get('structured') else ''} of "
                f"{hparams['train']}", summary.get("masked", {}))


def check_prune_config(cfg: PruneConfig) -> Criterion:
    if not 0 <= cfg.sparsity < 1:
        raise TicketlabError(f"sparsity must be in [0, 1), got {cfg.sparsity}")
    if cfg.output_sparsity is not None and not 0 <= cfg.output_sparsity < 1:
        raise TicketlabError(f"output sparsity must be in [0, 1), got {cfg.output_sparsity}")
    if cfg.scope not in (None, "global", "layerwise"):
        raise TicketlabError(f"scope must be global or layerwise, got {cfg.scope!r}")
    if cfg.score_batches < 1 or cfg.score_batch_size < 1:
        raise TicketlabError(f"score_batches and score_batch_size must be at least 1, got {cfg.score_batches} "
                             f"and {cfg.score_batch_size}")
    if cfg.empty_layer not in ("keep", "error"):
        raise TicketlabError(f"empty_layer must be keep or error, got {cfg.empty_layer!r}")
    criterion = get_criterion(cfg.criterion)
    if cfg.structured and not criterion.structured:
        structured = ", ".join(name for name, c in CRITERIA.items() if c.structured)
        raise TicketlabError(f"criterion {cfg.criterion} scores single weights; for whole units use a structured "
                             f"criterion ({structured})")
    if isinstance(cfg.round_to, bool) or not isinstance(cfg.round_to, int) or cfg.round_to < 1:
        raise TicketlabError(f"round_to is a number of units, at least 1; got {cfg.round_to!r}")
    if cfg.round_to > 1 and not criterion.structured:
        raise TicketlabError(f"--round-to rounds the units each channel group keeps; criterion {cfg.criterion} "
                             "prunes single weights (use a structured criterion such as l1_norm)")
    return criterion


def score_batches(data: Dataset, cfg: PruneConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first validation batches: data-driven criteria never see the test set."""
    val, size = data.val, cfg.score_batch_size
    batches = [(val.x[i:i + size], val.y[i:i + size]) for i in range(0, len(val.y), size)][:cfg.score_batches]
    if len(batches) < cfg.score_batches or len(batches[-1][1]) < size:
        raise TicketlabError(f"{cfg.score_batches} batches of {size} need more than the {len(val.y)} validation "
                             "images; use fewer or smaller batches, or a larger --val-size")
    return batches


def masked_metrics(model: nn.Module, data: Dataset, mask: Mask | None) -> dict[str, float]:
    """Validation and test loss and accuracy of the model under the mask (the model is left as it was)."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters()} if mask is not None else {}
    if mask is not None:
        mask.apply(model)
    val_loss, val_acc = evaluate(model, data.val)
    test_loss, test_acc = evaluate(model, data.test)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved:
                param.copy_(saved[name])
    return {"val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc}


def unit_counts(model: nn.Module, mask: Mask) -> dict[str, dict[str, int]]:
    """Kept and total units per channel group: a unit is kept while any of its producer weights is."""
    counts = {}
    for group in channel_groups(model):
        weights = [piece for piece in group.producers if piece.param in mask and piece.dim == 0]
        kept = sum(any(bool(mask[piece.param][piece.index(unit)].any()) for piece in weights)
                   for unit in range(group.size))
        counts[group.name] = {"kept": kept, "total": group.size}
    return counts


def with_scope(cfg: PruneConfig) -> PruneConfig:
    """The config with its scope filled in: global for single weights, layerwise for units."""
    return cfg if cfg.scope is not None else dataclasses.replace(cfg, scope="layerwise" if cfg.structured else "global")


def prune_identity(cfg: PruneConfig) -> dict[str, Any]:
    """What names a prune run, of a config whose scope is filled in. The scope's default was global
    for every mask before units got layerwise; global stays unnamed so that runs made then keep
    their names (and a structured run made with --scope layerwise then has the name it has now)."""
    identity = non_default(cfg)
    if identity.get("scope") == "global":
        del identity["scope"]
    return identity


def guarded_layers(counts: dict[str, dict[str, int]], sparsity: float) -> list[str]:
    """Layers left with one entry or unit where the target sparsity alone would keep more: the
    guard that never empties a layer kept them alive."""
    return [name for name, c in counts.items() if c["kept"] == 1 and round(c["total"] * (1 - sparsity)) > 1]


def prune_run_handle(train: TrainRun, cfg: PruneConfig, runs_dir: str | None) -> PruneRun:
    """The prune run these inputs name, finished or not (its config's scope filled in)."""
    cfg = with_scope(cfg)
    return PruneRun(PruneRun.run_for({"train": train.run.name, "prune": prune_identity(cfg)}, runs_dir), train, cfg)


def prune(train: TrainRun, cfg: PruneConfig = PruneConfig(), runtime: Runtime = Runtime()) -> PruneRun:
    """Score the trained run's weights at `cfg.at` and keep the best 1 - sparsity of them, as a cached mask.

    A layer that the ranking (in practice, a global one) would empty keeps its best unit or
    weight; such layers are listed in the summary's `guarded` and named in a note."""
    criterion = check_prune_config(cfg)
    result = prune_run_handle(train, cfg, runtime.runs_dir)
    cfg = result.config

    def write(made: tuple[Mask, dict[str, Any]]) -> dict[str, Any]:
        mask, summary = made
        mask.save(result.run.file(paths.MASK))
        atomic_write_text(result.run.file(paths.MASK_REPORT), mask.report() + "\n")
        return summary

    result.produce(
        runtime.force, lambda: ({"train": train.run.name, "prune": dataclasses.asdict(cfg)},
                                select_mask(train, cfg, criterion, runtime)), write)
    return result


def select_mask(train: TrainRun, cfg: PruneConfig, criterion: Criterion,
                runtime: Runtime) -> tuple[Mask, dict[str, Any]]:
    """The mask `cfg` selects from the trained run's weights, and the prune run's summary of it."""
    device = apply_runtime(runtime)
    data = train.dataset(runtime, device)
    model = init_model(train.model_config, data, train.training.seed).to(device)
    model.load_state_dict(train.state_dict(cfg.at))
    names = prunable_names(model, [p.strip() for p in cfg.parameters.split(",")] if cfg.parameters else None)
    context = ScoreContext(
        model=model, names=names,
        init=({k: v.to(device) for k, v in train.state_dict(cfg.compare).items()} if criterion.needs_init else None),
        batches=score_batches(data, cfg) if criterion.needs_data else None,
        sparsity=cfg.sparsity, generator=torch.Generator().manual_seed(cfg.seed),
    )
    mask = score_and_select(context, criterion, cfg.sparsity, scope=cfg.scope, output_sparsity=cfg.output_sparsity,
                            empty_layer=cfg.empty_layer, round_to=cfg.round_to)
    summary = {
        "criterion": cfg.criterion, "target_sparsity": cfg.sparsity, "sparsity": mask.sparsity(),
        "kept": mask.kept(), "total": mask.total(), "at": cfg.at,
        "layers": [dataclasses.asdict(layer) | {"sparsity": layer.sparsity} for layer in mask.layers()],
        "masked": masked_metrics(model, data, mask), "dense": masked_metrics(model, data, None),
    }
    if criterion.structured:
        summary["units"] = unit_counts(model, mask)
        kept_units, total_units = (sum(c[key] for c in summary["units"].values()) for key in ("kept", "total"))
        parameters = sum(p.numel() for p in model.parameters())
        summary["unit_sparsity"] = 1 - kept_units / total_units
        summary["parameter_sparsity"] = (mask.total() - mask.kept()) / parameters
    counts = summary.get("units") or {layer["name"]: {"kept": layer["kept"], "total": layer["total"]}
                                      for layer in summary["layers"]}
    summary["guarded"] = guarded_layers(counts, cfg.sparsity)
    if summary["guarded"]:
        advice = "; --scope layerwise prunes each layer at the same rate" if cfg.scope == "global" else ""
        note(f"{', '.join(summary['guarded'])}: 1 {'unit' if criterion.structured else 'weight'} left, kept by the "
             f"guard that never empties a layer (the {cfg.scope} ranking would have pruned all){advice}")
    return mask, summary
