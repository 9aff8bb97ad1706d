"""How the size of the search's objective subset biases it (the SA thesis's validation-size test).

The same search runs with its objective on the first n validation images for several n
(and on all of validation). For each, the best score it found, that mask's accuracy on
the validation images it never saw, and on the test set: the gap between the first and
the others is the search overfitting its small subset. Nothing is selected on test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ticketlab import paths
from ticketlab.config import Runtime, SearchConfig, TicketlabError
from ticketlab.report.plots import line_panels
from ticketlab.search.stage import search
from ticketlab.stage import Stage
from ticketlab.store import atomic_write_text, csv_text
from ticketlab.training.stage import TrainRun

COLUMNS = ("val_size", "search_score", "val_rest_acc", "test_acc", "gap_to_test", "search_run")


@dataclass
class ValidationSizeEffect(Stage):
    """How the search objective's size moves the gap to test: a table and a plot over searches."""

    rows: list[dict[str, Any]]
    KIND = "valsize"
    ARTIFACTS = (paths.TABLE, paths.VALSIZE_PLOT)

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        """A report over other runs: its table's size (the metrics are in its rows)."""
        return f"validation-size effect: {len(summary.get('rows', []))} searches", {}


def validation_size_effect(train: TrainRun, cfg: SearchConfig, sizes: Sequence[int | None],
                           runtime: Runtime = Runtime()) -> ValidationSizeEffect:
    """One search per objective size (None: all of validation); a table and a plot of the gap."""
    if not sizes:
        raise TicketlabError("give at least one validation size")
    if cfg.metric != "accuracy":
        raise TicketlabError("the validation-size table compares accuracies; use metric accuracy")
    rows = []
    for size in sizes:
        done = search(train, dataclasses.replace(cfg, val_size=size), runtime)
        best = done.summary["best"]
        rest = best["held_out"]["val_rest"]
        test = best["held_out"]["test"]["accuracy"]
        rows.append({"val_size": done.summary["objective_images"], "search_score": best["score"],
                     "val_rest_acc": rest["accuracy"] if rest else None, "test_acc": test,
                     "gap_to_test": best["score"] - test, "search_run": done.run.name})
    effect = ValidationSizeEffect(ValidationSizeEffect.run_for({"searches": [row["search_run"] for row in rows]},
                                                               runtime.runs_dir), rows)
    out = effect.run

    def write(_: None) -> dict[str, Any]:
        atomic_write_text(out.file(paths.TABLE), csv_text(rows, COLUMNS))
        line_panels(out.file(paths.VALSIZE_PLOT), [row["val_size"] for row in rows], {"accuracy": {
            "search objective (its own images)": [row["search_score"] for row in rows],
            "rest of validation": [row["val_rest_acc"] if row["val_rest_acc"] is not None else float("nan")
                                   for row in rows],
            "test": [row["test_acc"] for row in rows],
        }}, xlabel="validation images in the search objective", categorical=True,
            title=f"{cfg.method} ({cfg.granularity}, sparsity {cfg.sparsity:g}, at {cfg.at}) on {train.run.name}")
        return {"rows": rows}

    hparams = {"train": train.run.name, "search": dataclasses.asdict(cfg), "sizes": list(sizes)}
    effect.produce(runtime.force, lambda: (hparams, None), write)
    return effect
