"""Masks from several methods compared the SA thesis's way (its Tables 5.5 and 5.8).

For each replicate (dense seed), sparsity and method — a pruning criterion or a search —
the method's mask is made (a cached prune or search stage), then scored twice:
"rewind accuracy", the masked network at the rewind weights before any training, and
"trained accuracy", after retraining those weights under the mask (a cached stage too).
A structured mask (whole filters or units) is retrained as the physically smaller network
it stands for: shrunk at the rewind weights (checked equal to the masked network) and
trained from there, which is what the thesis's "actual pruning" did. Test accuracy is
reported at the best validation step; nothing is selected on test.

IMP is a method too: at sparsity s, a lottery of its levels, each pruning the same fraction of
what remains (1 − (1 − s)^(1/levels)), rewound to the comparison's rewind step; its mask is the
last level's, and its ticket that level's own retraining (the same retraining, from the same
rewind weights, that every other mask gets).

Searches are also compared by what they optimise: the best objective score found (the
masked network's score on the search's validation images at its checkpoint) and the
evaluations spent on it, on one objective: the comparison's first search's. A criterion's
mask spends no evaluations, and a search with another objective (another checkpoint, say)
is not drawn as a curve: each is scored once on that objective, a single point.
table.csv holds both; runs.csv says which searches were scored on their own objective, whose
history the report draws as the best score so far against evaluations (the others as flat lines).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ticketlab import paths
from ticketlab.config import (DataConfig, LotteryConfig, MaskMethod, ModelConfig, PruneConfig, Runtime, SearchConfig,
                              TicketlabError, TrainConfig)
from ticketlab.lottery.levels import lottery
from ticketlab.lottery.retrain import Setting, TicketRun, retrain
from ticketlab.search.stage import objective_score, search
from ticketlab.sparsity.prune import masked_metrics, prune
from ticketlab.sparsity.schedules import round_rate
from ticketlab.stage import Stage
from ticketlab.store import Run, atomic_write_text, csv_text
from ticketlab.structure.retrain import retrain_small
from ticketlab.structure.stage import is_structured, shrink_run
from ticketlab.training.stage import TrainRun, train, with_checkpoints


COLUMNS = ("method", "sparsity", "n", "rewind_acc_mean", "rewind_acc_std", "trained_acc_mean", "trained_acc_std",
           "evaluations", "search_score_mean", "search_score_std")


@dataclass
class Comparison(Stage):
    """A comparison's report run: its table over replicates, and one row per retrained mask."""

    rows: list[dict[str, Any]]  # aggregated over replicates, in COLUMNS
    runs: list[dict[str, Any]]  # one per (replicate, sparsity, method)
    KIND = "comparison"
    ARTIFACTS = (paths.TABLE, paths.RUNS_TABLE)

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        """A report over other runs: its table's size (the metrics are in its rows)."""
        return f"mask comparison: {len(summary.get('rows', []))} rows", {}


def at_sparsity(method: MaskMethod, sparsity: float, rewind: str) -> PruneConfig | SearchConfig | LotteryConfig:
    """The method's config for one compared sparsity (IMP's: the rate its levels reach it at)."""
    if isinstance(method.config, LotteryConfig):
        return dataclasses.replace(method.config, rate=round_rate(sparsity, method.config.levels), rewind=rewind)
    return dataclasses.replace(method.config, sparsity=sparsity)


def mask_run(dense: TrainRun, method: MaskMethod, sparsity: float, runtime: Runtime, rewind: str = "0it") -> Any:
    """The method's mask at the sparsity: a prune or search run, or IMP's last level."""
    config = at_sparsity(method, sparsity, rewind)
    if isinstance(config, LotteryConfig):
        return lottery(dense, config, runtime).level(config.levels).retrained
    return (prune if isinstance(config, PruneConfig) else search)(dense, config, runtime)


def dense_training(training: TrainConfig, methods: Sequence[MaskMethod], rewind: str, replicate: int) -> TrainConfig:
    """A replicate's dense training, keeping every step the masks are scored at or rewound to."""
    steps = ["0it", rewind, *(getattr(m.config, "at", "0it") for m in methods),
             *(getattr(m.config, "compare", "0it") for m in methods)]
    return dataclasses.replace(with_checkpoints(training, steps), seed=training.seed + replicate)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare_masks(data: DataConfig, model: ModelConfig, training: TrainConfig, methods: Sequence[MaskMethod],
                  sparsities: Sequence[float], runtime: Runtime = Runtime(), *, replicates: int = 1,
                  rewind: str = "0it", redo_report: bool | None = None) -> Comparison:
    """Every method at every sparsity on `replicates` dense seeds; table of mean ± std (sample std).
    The table is redone when `redo_report` (default: runtime.force) though its runs are not: a
    study redoes them first, each once."""
    if not methods or not sparsities:
        raise TicketlabError("a comparison needs at least one method and one sparsity")
    if replicates < 1:
        raise TicketlabError(f"replicates must be at least 1, got {replicates}")
    # The objective every mask is also scored on: the first search's (none without a search).
    objective = next((m.config for m in methods if isinstance(m.config, SearchConfig)), None)
    runs = []
    for replicate in range(replicates):
        dense = train(data, model, dense_training(training, methods, rewind, replicate), runtime)
        setting = Setting.of(dense, runtime)
        for sparsity in sparsities:
            for method in methods:
                made = mask_run(dense, method, sparsity, runtime, rewind)
                mask = made.mask()
                at_rewind = setting.model()
                at_rewind.load_state_dict(dense.state_dict(rewind))
                ticket = retrain_ticket(made, method, setting, rewind, runtime)
                runs.append({"replicate": replicate, "method": method.name, "sparsity": sparsity,
                             "mask_run": made.run.name, "ticket_run": ticket.run.name,
                             "rewind_acc": masked_metrics(at_rewind, setting.data, mask)["test_acc"],
                             "trained_acc": ticket.summary["best"]["test_acc"],
                             **_search_score(made, method, dense, objective, runtime)})
    rows = []
    for sparsity in sparsities:
        for method in methods:
            mine = [r for r in runs if r["method"] == method.name and r["sparsity"] == sparsity]
            rewind_mean, rewind_std = _mean_std([r["rewind_acc"] for r in mine])
            trained_mean, trained_std = _mean_std([r["trained_acc"] for r in mine])
            rows.append({"method": method.name, "sparsity": sparsity, "n": len(mine),
                         "rewind_acc_mean": rewind_mean, "rewind_acc_std": rewind_std,
                         "trained_acc_mean": trained_mean, "trained_acc_std": trained_std,
                         "evaluations": max(r["evaluations"] for r in mine)})
            scores = [r["search_score"] for r in mine if r["search_score"] is not None]
            if scores:
                found = _mean_std(scores)
                rows[-1].update(search_score_mean=found[0], search_score_std=found[1])
    report = Comparison(Comparison.run_for({"runs": sorted(r["ticket_run"] for r in runs)}, runtime.runs_dir),
                        rows, runs)
    out = report.run

    def write(_: None) -> dict[str, Any]:
        atomic_write_text(out.file(paths.TABLE), csv_text(rows, COLUMNS))
        atomic_write_text(out.file(paths.RUNS_TABLE), csv_text(report.runs, tuple(report.runs[0])))
        return {"rows": rows}

    hparams = {"methods": [m.name for m in methods], "sparsities": list(sparsities), "rewind": rewind}
    report.produce(runtime.force if redo_report is None else redo_report, lambda: (hparams, None), write)
    return report


def ticket_run(mask_run: str, rewind: str, runs_dir: str | None) -> Run:
    """The run of the mask run named `mask_run` retrained from `rewind`, finished or not."""
    return TicketRun.run_for({"mask": mask_run, "rewind": rewind}, runs_dir)


def retrain_ticket(made: Any, method: MaskMethod, setting: Setting, rewind: str, runtime: Runtime) -> Stage:
    """The mask's network retrained from the rewind weights: shrunk first if the mask is structured;
    IMP's last level is retrained so already."""
    if isinstance(method.config, LotteryConfig):
        return made
    if is_structured(made):
        return retrain_small(shrink_run(made, runtime, step=rewind), "rewind", runtime, rewind=rewind)
    dense = setting.dense
    return retrain(TicketRun(ticket_run(made.run.name, rewind, runtime.runs_dir)), setting,
                   dense.state_dict(rewind), made.mask(), start_iteration=setting.iteration(rewind),
                   hparams={"mask": made.run.name, "rewind": rewind, "method": method.name})


# What a search's best score depends on besides its mask: equal in these, two searches share an objective.
OBJECTIVE_FIELDS = ("at", "metric", "val_size", "train_steps")


def _search_score(made: Any, method: MaskMethod, dense: TrainRun, objective: SearchConfig | None,
                  runtime: Runtime) -> dict[str, Any]:
    """Evaluations a mask cost, its objective score, and whether that score is the search's own
    best (a search of that objective: its history is then the curve to that score)."""
    config = method.config
    searched = isinstance(config, SearchConfig)
    evaluations = made.summary["evaluations"] if searched else 0
    if searched and all(getattr(config, f) == getattr(objective, f) for f in OBJECTIVE_FIELDS):
        return {"evaluations": evaluations, "search_score": made.summary["best"]["score"], "searched_objective": True}
    # A mask is scored as it is: an objective that trains each candidate first has no such score.
    score = None if objective is None or objective.train_steps else objective_score(dense, objective, made.mask(),
                                                                                  runtime)
    return {"evaluations": evaluations, "search_score": score, "searched_objective": False}
