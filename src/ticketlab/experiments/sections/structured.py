"""Structured pruning (`earlybird` and `shrink`): the dense run trains keeping the steps the shrink
entries prune at (drawing early-bird tickets with an earlybird section: that run is then the dense
run every section prunes), then each (entry, step, ratio) is pruned, physically shrunk and retrained
in each mode (experiments/structured.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ticketlab.config import PruneConfig, Runtime, TicketlabError, coerce, from_dict
from ticketlab.experiments.sections.base import Context, Described, Section, mapping
from ticketlab.experiments.structured import (EARLYBIRD_AT, REWIND_AT, EarlyBirdSection, ShrinkPlan,
                                              StructuredExperiment, check_sections, dense_training, entries,
                                              run_entry, run_structured, structured_dense)
from ticketlab.experiments.study import Node
from ticketlab.sparsity.prune import prune_run_handle
from ticketlab.structure.earlybird import EarlyBirdResult, earlybird_run
from ticketlab.structure.retrain import small_run_handle
from ticketlab.structure.stage import shrink_run_handle
from ticketlab.training.stage import TrainRun, train_run_handle

EARLYBIRD_OPTIONS = {"criterion": str, "threshold": float, "stop": bool}  # as earlybird() takes them
SHRINK_KEYS = {"prune", "at", "ratios", "retrain", "rewind"}


@dataclass(frozen=True)
class Structured:
    earlybird: EarlyBirdSection | None
    shrink: tuple[ShrinkPlan, ...] = ()


class StructuredSection(Section):
    name = "structured"
    keys = ("earlybird", "shrink")
    makes_dense = True

    def parse(self, raw: Mapping[str, Any], preset: str) -> Structured:
        return Structured(_earlybird(raw["earlybird"], preset) if "earlybird" in raw else None,
                          _shrink(raw["shrink"], preset) if "shrink" in raw else ())

    def smoke(self, value: Structured | None, overrides: Mapping[str, Any], preset: str) -> Structured:
        value = value or Structured(None)
        if "earlybird" in overrides:  # a tweak: fewer ratios, a looser threshold
            if value.earlybird is None:
                raise TicketlabError(f"{preset}: smoke cannot change earlybird")
            current = {"ratios": list(value.earlybird.ratios), **value.earlybird.options}
            changed = {**current, **mapping(overrides["earlybird"], f"{preset}: smoke.earlybird")}
            value = dataclasses.replace(value, earlybird=_earlybird(changed, preset))
        if "shrink" in overrides:  # a whole smaller list: fewer steps, ratios, modes
            value = dataclasses.replace(value, shrink=_shrink(overrides["shrink"], f"{preset}: smoke"))
        return value

    def check(self, value: Structured) -> None:
        check_sections(value.earlybird, value.shrink)

    def dense(self, value: Structured, context: Context, runtime: Runtime) -> TrainRun:
        return structured_dense(context.data, context.model, context.training, value.earlybird, value.shrink,
                                runtime)[0]

    def dense_handle(self, value: Structured, context: Context) -> TrainRun:
        training = dense_training(context.training, value.shrink)
        if value.earlybird is None:
            return train_run_handle(context.data, context.model, training, context.runtime.runs_dir,
                                    context.runtime.data_dir)
        run = earlybird_run(context.data, context.model, training, value.earlybird.ratios, context.runtime.runs_dir,
                            **value.earlybird.options, data_dir=context.runtime.data_dir)
        return TrainRun(run, context.data, context.model, training)

    def nodes(self, value: Structured, context: Context) -> list[Node]:
        """One node per (entry, step, ratio): its prune, shrink and retrainings. An entry pruned at
        the early-bird tickets learns its step only once the dense run has drawn them."""
        dense = context.dense_handle()
        drawn = _drawn_steps(dense) if value.earlybird is not None else {}
        nodes: dict[str, Node] = {}
        for number, (plan, step, ratio) in enumerate(entries(value.shrink, value.earlybird)):
            name = f"{dense.run.name}: shrink[{value.shrink.index(plan)}] at {step}, ratio {ratio:g}"
            at = drawn.get(ratio) if step == EARLYBIRD_AT else step
            runs = () if at is None else _entry_runs(dense, plan, at, ratio, context.runtime.runs_dir)
            nodes.setdefault(name, Node(name, _entry, (context, value, number), (dense.run.name,), kind="shrink",
                                        runs=runs, trainings=len(plan.retrain)))
        return list(nodes.values())

    def result(self, value: Structured, context: Context) -> StructuredExperiment:
        return run_structured(context.data, context.model, context.training, value.earlybird, value.shrink,
                              context.runtime, redo_report=context.redo_reports)

    def describe(self, result: StructuredExperiment) -> Described:
        payload: dict[str, Any] = {"structured": {"run_dir": str(result.path) if result.path else None,
                                                  "rows": result.rows, "skipped": result.skipped}}
        if result.earlybird is not None:
            payload["earlybird"] = earlybird_payload(result.earlybird)
        return describe_structured(result), payload


def _drawn_steps(dense: TrainRun) -> dict[float, str]:
    """Once the early-bird run is done, the step each ratio's ticket was drawn at (none: no ticket)."""
    if not dense.run.done or dense.run.problem() is not None:
        return {}
    found = EarlyBirdResult(dense.run).found
    return {ratio: f"{epoch}ep" for ratio, epoch in found.items() if epoch is not None}


def _entry_runs(dense: TrainRun, plan: ShrinkPlan, step: str, ratio: float, runs_dir: str | None) -> tuple[str, ...]:
    made = prune_run_handle(dense, dataclasses.replace(plan.prune, sparsity=ratio, at=step), runs_dir)
    shrunk = shrink_run_handle(made, step, runs_dir=runs_dir)
    rewind = step if plan.rewind == REWIND_AT else plan.rewind
    return (made.run.name, shrunk.run.name,
            *(small_run_handle(shrunk, mode, rewind, runs_dir=runs_dir).name for mode in plan.retrain))


def _entry(context: Context, value: Structured, number: int) -> None:
    dense, drawn = structured_dense(context.data, context.model, context.training, value.earlybird, value.shrink,
                                    context.input_runtime)
    plan, step, ratio = entries(value.shrink, value.earlybird)[number]
    run_entry(dense, drawn, plan, step, ratio, context.node_runtime)


def _earlybird(section: Any, preset: str) -> EarlyBirdSection:
    section = mapping(section, f"{preset}: earlybird")
    extra = set(section) - {"ratios", *EARLYBIRD_OPTIONS}
    if extra or not isinstance(section.get("ratios"), list) or not section["ratios"]:
        raise TicketlabError(f"{preset}: earlybird takes ratios (a list) and optionally "
                             f"{', '.join(EARLYBIRD_OPTIONS)}" + (f"; not {', '.join(sorted(extra))}" if extra else ""))
    options = {key: coerce(section[key], kind, f"{preset}: earlybird.{key}")
               for key, kind in EARLYBIRD_OPTIONS.items() if key in section}
    return EarlyBirdSection(tuple(coerce(r, float, f"{preset}: earlybird.ratios") for r in section["ratios"]), options)


def _shrink(section: Any, preset: str) -> tuple[ShrinkPlan, ...]:
    if not isinstance(section, list) or not section:
        raise TicketlabError(f"{preset}: shrink must be a list of entries with keys {', '.join(sorted(SHRINK_KEYS))}")
    plans = []
    for i, entry in enumerate(section):
        where = f"{preset}: shrink[{i}]"
        entry = mapping(entry, where)
        extra = set(entry) - SHRINK_KEYS
        if extra:
            raise TicketlabError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; "
                                 f"expected some of {', '.join(sorted(SHRINK_KEYS))}")
        lists = {key: entry[key] for key in ("at", "ratios", "retrain") if key in entry}
        for key, listed in lists.items():
            if not isinstance(listed, list) or not listed:
                raise TicketlabError(f"{where}: {key} must be a non-empty list")
        prune = mapping(entry.get("prune"), f"{where}.prune")
        fixed = sorted(set(prune) & {"sparsity", "at", "structured"})
        if fixed:
            raise TicketlabError(f"{where}.prune: {', '.join(fixed)} cannot be set here; the entry's ratios "
                                 "and at give them, and shrinking needs structured masks")
        # Global by default, as the early-bird detector and network slimming rank channels: the
        # ticket a plan prunes at an early-bird epoch is then the mask the detector drew.
        plans.append(ShrinkPlan(
            from_dict(PruneConfig, {"criterion": "bn_scale", "scope": "global", **prune, "structured": True},
                      f"{where}.prune"),
            tuple(str(step) for step in lists.get("at", [])),
            tuple(coerce(r, float, f"{where}.ratios") for r in lists.get("ratios", [])),
            tuple(str(mode) for mode in lists.get("retrain", ["finetune"])),
            str(entry.get("rewind", "0it")),
        ))
    return tuple(plans)


def describe_earlybird(result: EarlyBirdResult) -> list[str]:
    settings = result.run.identity["earlybird"]
    lines = [f"{'finished earlier: ' if result.cached else ''}early-bird tickets by {settings['criterion']} "
             f"(distance < {settings['threshold']} to each of the 4 previous epochs' masks), "
             f"{result.total_epochs} epochs:"]
    for ratio, epoch in result.found.items():
        lines.append(f"  pruning ratio {ratio:g}: " + (f"found at epoch {epoch} ({100 * result.cost[ratio]:.0f}% of "
                                                         "training)" if epoch is not None else "not found"))
    stopped = result.summary.get("stopped_early_at")
    if stopped is not None:
        lines.append(f"  training stopped at epoch {stopped}")
    lines.append(f"  mask distances, tickets' checkpoints: {result.path}")
    return lines


def earlybird_payload(result: EarlyBirdResult) -> dict[str, Any]:
    return {"run_dir": str(result.path), "cached": result.cached,
            "found": {str(r): e for r, e in result.found.items()}, "metrics": result.summary}


def describe_structured(experiment: StructuredExperiment) -> list[str]:
    lines = describe_earlybird(experiment.earlybird) if experiment.earlybird is not None else []
    if not experiment.rows:
        return lines + [f"  {note}" for note in experiment.skipped]
    lines += [f"structured pruning, shrunk and retrained (dense test acc {experiment.rows[0]['dense_test_acc']:.4f}; "
              "test acc at the best validation step):",
              f"  {'at':<10} {'epoch':>6} {'ratio':>5} {'retrain':<8} {'from':<11} {'params':>11} {'kept':>6} "
              f"{'MACs':>7} {'latency':>7} {'pruned':>7} {'retrained':>9}"]
    for row in experiment.rows:
        lines.append(f"  {row['at']:<10} {row['epoch']:>6.3g} {row['ratio']:>5g} {row['mode']:<8} {row['start']:<11} "
                     f"{row['params_small']:>11,} {100 * row['params_small'] / row['params_dense']:>5.1f}% "
                     f"{row['macs_dense'] / row['macs_small']:>6.2f}x "
                     f"{row['latency_b64_dense_ms'] / row['latency_b64_small_ms']:>6.2f}x "
                     f"{row['pruned_test_acc']:>7.4f} {row['retrained_test_acc']:>9.4f}")
    lines.append("  (kept: parameters of the dense network kept; MACs, latency: how many times fewer / faster, "
                 "CPU batch 64; pruned: the shrunk network before retraining)")
    lines += [f"  {note}" for note in experiment.skipped]
    lines.append(f"  table: {experiment.path}")
    return lines


SECTION = StructuredSection()
