"""Layerwise sensitivity: each prunable layer pruned on its own by weight magnitude over a ladder
of sparsities, the rest of the network left dense, scored without retraining. A layer whose
accuracy holds to high sparsity has weights to spare; one that falls early is where a global
ranking should prune least (Han et al. 2015 set per-layer rates this way).

A cached stage: `sensitivity.csv` holds one row per (layer, sparsity), on validation (what one
would choose rates by) and on test.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ticketlab import paths
from ticketlab.config import Runtime, TicketlabError
from ticketlab.data import Dataset
from ticketlab.sparsity.criteria import ScoreContext
from ticketlab.sparsity.mask import prunable_names
from ticketlab.sparsity.schedules import check_sparsity
from ticketlab.sparsity.selection import score_and_select
from ticketlab.stage import Stage
from ticketlab.store import atomic_write_text, csv_text, read_csv
from ticketlab.training.loop import evaluate
from ticketlab.training.stage import TrainRun, apply_runtime, init_model

LADDER = (0.5, 0.8, 0.9, 0.95, 0.99)
COLUMNS = ("layer", "sparsity", "val_loss", "val_acc", "test_loss", "test_acc")


@dataclass
class Sensitivity(Stage):
    """A sensitivity run: one row per (layer, sparsity) in COLUMNS, and the dense accuracy."""

    KIND = "sensitivity"
    ARTIFACTS = (paths.SENSITIVITY_TABLE,)

    @functools.cached_property
    def rows(self) -> list[dict[str, Any]]:
        return [{key: value if key == "layer" else float(value) for key, value in row.items()}
                for row in read_csv(self.run.file(paths.SENSITIVITY_TABLE))]

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        return (f"layer sensitivity of {hparams['train']} at {len(hparams['ladder'])} sparsities",
                {"val_acc": summary.get("dense_val_acc"), "test_acc": summary.get("dense_test_acc")})


def check_ladder(ladder: Sequence[float]) -> list[float]:
    """Sorted, without repeats, each in (0, 1)."""
    values = sorted({float(k) for k in ladder})
    if not values:
        raise TicketlabError("a sensitivity ladder needs at least one sparsity")
    for k in values:
        check_sparsity(k)
    return values


def sensitivity_identity(train: TrainRun, ladder: Sequence[float], step: str) -> dict[str, Any]:
    identity: dict[str, Any] = {"train": train.run.name}
    if step != "best":
        identity["step"] = step
    if tuple(ladder) != LADDER:
        identity["ladder"] = list(ladder)
    return identity


def sensitivity(train: TrainRun, ladder: Sequence[float] = LADDER, *, step: str = "best",
                runtime: Runtime = Runtime()) -> Sensitivity:
    """Prune each prunable layer of the trained weights at `step` alone to each sparsity of the
    ladder and score it; or return the finished run with the same inputs."""
    ladder = check_ladder(ladder)
    if not train.run.done:
        raise TicketlabError(f"training run {train.run.name} has not finished; train it first")
    result = Sensitivity(Sensitivity.run_for(sensitivity_identity(train, ladder, step), runtime.runs_dir))

    def prepare() -> tuple[dict[str, Any], tuple[dict[str, torch.Tensor], Dataset, nn.Module]]:
        weights = train.state_dict(step)
        device = apply_runtime(runtime)
        data = train.dataset(runtime, device)
        model = init_model(train.model_config, data, train.training.seed).to(device)
        return {"train": train.run.name, "step": step, "ladder": ladder}, (weights, data, model)

    def write(prepared: tuple[dict[str, torch.Tensor], Dataset, nn.Module]) -> dict[str, Any]:
        weights, data, model = prepared
        model.load_state_dict(weights)
        (val_loss, val_acc), (test_loss, test_acc) = evaluate(model, data.val), evaluate(model, data.test)
        rows = []
        for layer in prunable_names(model):
            for k in ladder:
                model.load_state_dict(weights)  # the other layers dense, this one pruned alone
                score_and_select(ScoreContext(model, [layer]), "magnitude", k).apply(model)
                (v_loss, v_acc), (t_loss, t_acc) = evaluate(model, data.val), evaluate(model, data.test)
                rows.append({"layer": layer, "sparsity": k, "val_loss": v_loss, "val_acc": v_acc,
                             "test_loss": t_loss, "test_acc": t_acc})
        atomic_write_text(result.run.file(paths.SENSITIVITY_TABLE), csv_text(rows, COLUMNS))
        return {"train": train.run.name, "step": step, "dense_val_acc": val_acc, "dense_val_loss": val_loss,
                "dense_test_acc": test_acc, "dense_test_loss": test_loss, "layers": len(rows) // len(ladder)}

    result.produce(runtime.force, prepare, write)
    return result
