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
from ticketlab.search.stage import search
from ticketlab.stage import Stage
from ticketlab.store import atomic_write_text, csv_text
from ticketlab.training.stage import TrainRun

COLUMNS = ("val_size", "search_score", "val_rest_acc", "test_acc", "gap_to_test", "search_run")


@dataclass
class ValidationSizeEffect(Stage):
    """How the search objective's size moves the gap to test: a table over searches."""

    rows: list[dict[str, Any]]
    KIND = "valsize"
    ARTIFACTS = (paths.TABLE,)

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        """A report over other runs: its table's size (the metrics are in its rows)."""
        return f"validation-size effect: {len(summary.get('rows', []))} searches", {}


def validation_size_effect(train: TrainRun, cfg: SearchConfig, sizes: Sequence[int | None],
                           runtime: Runtime = Runtime()) -> ValidationSizeEffect:
    """One search per objective size (None: all of validation); a table of the gap."""
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
        return {"rows": rows}

    hparams = {"train": train.run.name, "search": dataclasses.asdict(cfg), "sizes": list(sizes)}
    effect.produce(runtime.force, lambda: (hparams, None), write)
    return effect
