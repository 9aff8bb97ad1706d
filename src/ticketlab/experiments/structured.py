"""Structured pruning as an experiment: seed 003's experiment 3, You et al.'s early-bird
tickets, Liu et al.'s network slimming and their fine-tune vs rewind vs scratch question.

For a preset's `earlybird` and `shrink` sections. The dense network trains first; with an
earlybird section it trains under the early-bird detector, and that run is the dense run,
each drawn ticket a checkpoint of it (so the step `earlybird` means "each ratio at its
ticket's epoch"). Then for each shrink entry, step and ratio a structured mask is made (a
cached prune stage), the network is physically shrunk at the step pruned (a cached shrink
stage: parameters, MACs, CPU latency, accuracy before retraining) and the small network
is retrained in each mode (a cached stage each). Overlapping entries share their runs.

The table has one row per (step, ratio, mode, start); test accuracy is read at the
best-validation step, so nothing is selected on the test set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketlab import paths
from ticketlab.config import DataConfig, ModelConfig, PruneConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.sparsity.criteria import get_criterion
from ticketlab.sparsity.prune import check_prune_config, prune
from ticketlab.sparsity.schedules import check_sparsity
from ticketlab.stage import Stage
from ticketlab.store import atomic_write_text, csv_text
from ticketlab.structure.earlybird import EarlyBird, EarlyBirdResult, earlybird
from ticketlab.structure.retrain import MODES, SmallRun, retrain_small
from ticketlab.structure.stage import ShrinkRun, shrink_run
from ticketlab.training.stage import TrainRun, train, with_checkpoints
from ticketlab.training.steps import Step

NAMED_STEPS = ("best", "final")  # checkpoints every training keeps
EARLYBIRD_AT = "earlybird"  # a shrink entry's `at` that means each ratio's early-bird ticket
REWIND_AT = "at"  # a shrink entry's rewind that means the step it pruned at
COLUMNS = ("at", "pruned_at", "epoch", "ratio", "mode", "start", "params_dense", "params_small", "macs_dense",
           "macs_small", "latency_b1_dense_ms", "latency_b1_small_ms", "latency_b64_dense_ms", "latency_b64_small_ms",
           "dense_test_acc", "pruned_test_acc", "retrained_val_acc", "retrained_test_acc", "retrained_best_step",
           "prune_run", "shrink_run", "retrain_run")


@dataclass(frozen=True)
class EarlyBirdSection:
    """Early-bird tickets drawn while the dense network trains (You et al.): the pruning ratios,
    and `options` for earlybird() (criterion, threshold, stop; its defaults where absent)."""

    ratios: tuple[float, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShrinkPlan:
    """One entry of a `shrink` section: the dense run pruned by `prune` (structured; criterion
    bn_scale unless given) at each step of `at` and each ratio, every mask physically shrunk,
    and each small network retrained in each `retrain` mode (finetune, rewind, scratch), rewind
    starting from `rewind`: a saved step, or `at` for the step pruned at. Without `at` or
    `ratios`, the preset's earlybird section gives them: each ratio pruned at its ticket."""

    prune: PruneConfig
    at: tuple[str, ...] = ()
    ratios: tuple[float, ...] = ()
    retrain: tuple[str, ...] = ("finetune",)
    rewind: str = "0it"


@dataclass
class StructuredReport(Stage):
    """The structured experiment's table, a run named by the retrainings it reports."""

    KIND = "structured"
    ARTIFACTS = (paths.TABLE,)

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        """A report over other runs: its table's size (the metrics are in its rows)."""
        return f"structured pruning: {len(summary.get('rows', []))} rows", {}


@dataclass
class StructuredExperiment:
    """The dense run (the early-bird run when there was one), the early-bird result, and the table
    (rows in COLUMNS, written to `path`; None when no row was made)."""

    dense: TrainRun
    earlybird: EarlyBirdResult | None = None
    path: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # e.g. a ratio that drew no early-bird ticket


def check_sections(section: EarlyBirdSection | None, plans: Sequence[ShrinkPlan]) -> None:
    """Every value of the sections, before anything trains: one-line TicketlabErrors."""
    detector = EarlyBird(section.ratios, **section.options) if section is not None else None
    for number, plan in enumerate(plans, 1):
        where = f"shrink entry {number}"
        unknown = [mode for mode in plan.retrain if mode not in MODES]
        if unknown:
            raise TicketlabError(f"{where}: unknown retraining mode(s) {', '.join(unknown)}; "
                                 f"expected some of {', '.join(MODES)}")
        if not (plan.at and plan.ratios) and detector is None:
            raise TicketlabError(f"{where}: give at (steps to prune at) and ratios, or an earlybird section "
                                 "whose tickets give them")
        steps, ratios = _steps(plan), _ratios(plan, section)
        for ratio in ratios:
            check_sparsity(ratio, f"{where}: ratio")
            check_prune_config(dataclasses.replace(plan.prune, sparsity=ratio))
        for step in steps:
            if step == EARLYBIRD_AT:
                _check_ticket_steps(where, plan, ratios, detector)
            elif step not in NAMED_STEPS:
                Step.parse(step)
        if plan.rewind != REWIND_AT:
            Step.parse(plan.rewind)
        elif "rewind" in plan.retrain and set(steps) & set(NAMED_STEPS):
            raise TicketlabError(f"{where}: rewind: at needs steps to rewind to; {', '.join(NAMED_STEPS)} are not "
                                 "(give a step such as 0it)")


def _check_ticket_steps(where: str, plan: ShrinkPlan, ratios: Sequence[float], detector: EarlyBird | None) -> None:
    if detector is None:
        raise TicketlabError(f"{where}: at {EARLYBIRD_AT} needs an earlybird section")
    if get_criterion(plan.prune.criterion) is not detector.criterion:
        raise TicketlabError(f"{where}: at {EARLYBIRD_AT} prunes the tickets, so its criterion must be the "
                             f"earlybird one, not {plan.prune.criterion}")
    if plan.prune.scope != "global":
        raise TicketlabError(f"{where}: at {EARLYBIRD_AT} prunes the tickets, which the detector draws by one global "
                             f"ranking of channels; the scope must be global, not {plan.prune.scope}")
    missing = [f"{r:g}" for r in ratios if r not in detector.ratios]
    if missing:
        raise TicketlabError(f"{where}: ratio(s) {', '.join(missing)} draw no early-bird ticket; the earlybird "
                             f"section's ratios are {', '.join(f'{r:g}' for r in detector.ratios)}")


def checkpoint_steps(plans: Sequence[ShrinkPlan]) -> list[str]:
    """The steps the dense run must keep: those pruned at and those rewound to."""
    steps = [step for plan in plans for step in plan.at if step not in (*NAMED_STEPS, EARLYBIRD_AT)]
    steps += [plan.rewind for plan in plans if "rewind" in plan.retrain and plan.rewind != REWIND_AT]
    return steps


def dense_training(training: TrainConfig, plans: Sequence[ShrinkPlan]) -> TrainConfig:
    return with_checkpoints(training, checkpoint_steps(plans))


def structured_dense(data: DataConfig, model: ModelConfig, training: TrainConfig, section: EarlyBirdSection | None,
                     plans: Sequence[ShrinkPlan], runtime: Runtime) -> tuple[TrainRun, EarlyBirdResult | None]:
    """The dense run the plans prune (trained first if it is not done), and its early-bird result:
    with an earlybird section, the early-bird run read as a training."""
    training = dense_training(training, plans)
    if section is None:
        return train(data, model, training, runtime), None
    drawn = earlybird(data, model, training, section.ratios, runtime, **section.options)
    return drawn.as_training(data, model, training), drawn


def entries(plans: Sequence[ShrinkPlan], section: EarlyBirdSection | None) -> list[tuple[ShrinkPlan, str, float]]:
    """Each (plan, step, ratio) to prune, shrink and retrain, in order."""
    return [(plan, step, ratio) for plan in plans for step in _steps(plan) for ratio in _ratios(plan, section)]


def run_entry(dense: TrainRun, drawn: EarlyBirdResult | None, plan: ShrinkPlan, step: str, ratio: float,
              runtime: Runtime) -> list[dict[str, Any]] | str:
    """One (plan, step, ratio): pruned, shrunk and retrained in each mode (cached stages); its
    rows, or why there is nothing to prune."""
    at = _pruned_at(step, ratio, drawn)
    if at is None:
        return f"ratio {ratio:g}: no early-bird ticket was drawn, so nothing to prune"
    source = prune(dense, dataclasses.replace(plan.prune, sparsity=ratio, at=at), runtime)
    shrunk = shrink_run(source, runtime, step=at)
    rows = []
    for mode in plan.retrain:
        rewind = at if plan.rewind == REWIND_AT else plan.rewind
        small = retrain_small(shrunk, mode, runtime, rewind=rewind)
        rows.append(_row(step, at, ratio, _start(mode, at, rewind), dense, shrunk, small))
    return rows


def run_structured(data: DataConfig, model: ModelConfig, training: TrainConfig, section: EarlyBirdSection | None,
                   plans: Sequence[ShrinkPlan], runtime: Runtime = Runtime(),
                   redo_report: bool | None = None) -> StructuredExperiment:
    """Train (drawing early-bird tickets when `section` is given), then prune, shrink and retrain
    as `plans` say; every stage cached. See the module docstring. The table is redone when
    `redo_report` (default: runtime.force) though its runs are not: a study redoes them first."""
    check_sections(section, plans)
    dense, drawn = structured_dense(data, model, training, section, plans, runtime)
    result = StructuredExperiment(dense, drawn)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}  # overlapping entries give the same row once
    for plan, step, ratio in entries(plans, section):
        made = run_entry(dense, drawn, plan, step, ratio, runtime)
        if isinstance(made, str):
            result.skipped += [made] if made not in result.skipped else []
            continue
        for row in made:
            rows.setdefault((row["at"], row["pruned_at"], ratio, row["mode"], row["start"]), row)
    result.rows = list(rows.values())
    if result.rows:
        result.path = _write_report(result.rows, runtime, runtime.force if redo_report is None else redo_report)
    return result


def _steps(plan: ShrinkPlan) -> tuple[str, ...]:
    return plan.at or (EARLYBIRD_AT,)


def _ratios(plan: ShrinkPlan, section: EarlyBirdSection | None) -> tuple[float, ...]:
    return plan.ratios or (section.ratios if section is not None else ())


def _pruned_at(step: str, ratio: float, drawn: EarlyBirdResult | None) -> str | None:
    """The checkpoint a step names: the ticket's epoch for `earlybird` (None: no ticket), else itself."""
    if step != EARLYBIRD_AT:
        return step
    epoch = drawn.found[ratio]  # type: ignore[union-attr]
    return None if epoch is None else f"{epoch}ep"


def _start(mode: str, at: str, rewind: str) -> str:
    """The weights a retraining starts from, in words for the table."""
    return {"finetune": at, "rewind": rewind, "scratch": "random init"}[mode]


def _epoch(dense: TrainRun, at: str) -> float:
    summary = dense.summary
    if at in NAMED_STEPS:
        iteration = summary["best"]["iteration"] if at == "best" else summary["iterations"]
    else:
        iteration = Step.parse(at).to_iterations(summary["iterations_per_epoch"])
    return iteration / summary["iterations_per_epoch"]


def _row(step: str, at: str, ratio: float, start: str, dense: TrainRun, shrunk: ShrinkRun,
         small: SmallRun) -> dict[str, Any]:
    summary, best = shrunk.summary, small.summary["best"]
    latency = summary["latency_ms"]
    return {
        "at": step, "pruned_at": at, "epoch": _epoch(dense, at), "ratio": ratio, "mode": small.mode, "start": start,
        "params_dense": summary["parameters"]["dense"], "params_small": summary["parameters"]["small"],
        "macs_dense": summary["macs"]["dense"], "macs_small": summary["macs"]["small"],
        "latency_b1_dense_ms": latency["dense"]["batch_1"], "latency_b1_small_ms": latency["small"]["batch_1"],
        "latency_b64_dense_ms": latency["dense"]["batch_64"], "latency_b64_small_ms": latency["small"]["batch_64"],
        "dense_test_acc": dense.summary["best"]["test_acc"], "pruned_test_acc": summary["metrics"]["test_acc"],
        "retrained_val_acc": best["val_acc"], "retrained_test_acc": best["test_acc"],
        "retrained_best_step": best["step"],
        "prune_run": shrunk.source.run.name, "shrink_run": shrunk.run.name, "retrain_run": small.run.name,
    }


def _write_report(rows: list[dict[str, Any]], runtime: Runtime, redo: bool) -> Path:
    """table.csv: one row per (epoch pruned at, mode, start, ratio); the report draws it."""
    report = StructuredReport(StructuredReport.run_for({"runs": sorted(row["retrain_run"] for row in rows)},
                                                       runtime.runs_dir))
    out = report.run

    def write(_: None) -> dict[str, Any]:
        atomic_write_text(out.file(paths.TABLE), csv_text(rows, COLUMNS))
        return {"rows": rows}

    report.produce(redo, lambda: ({"rows": len(rows)}, None), write)
    return report.path
