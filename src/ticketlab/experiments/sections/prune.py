"""The `prune` section: one mask of the dense run by a criterion, scored without retraining."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ticketlab import paths
from ticketlab.config import PruneConfig, from_dict
from ticketlab.experiments.sections.base import Context, Described, Section, mapping
from ticketlab.experiments.study import Node
from ticketlab.sparsity.prune import PruneRun, check_prune_config, prune, prune_run_handle


class PruneSection(Section):
    name = "prune"

    def parse(self, raw: Mapping[str, Any], preset: str) -> PruneConfig:
        return from_dict(PruneConfig, mapping(raw["prune"], f"{preset}: prune"), f"{preset}: prune")

    def smoke(self, value: PruneConfig | None, overrides: Mapping[str, Any], preset: str) -> PruneConfig:
        if value is None:
            return super().smoke(value, overrides, preset)
        changed = {**dataclasses.asdict(value), **mapping(overrides["prune"], f"{preset}: smoke.prune")}
        return from_dict(PruneConfig, changed, f"{preset}: smoke.prune")

    def check(self, value: PruneConfig) -> None:
        check_prune_config(value)

    def nodes(self, value: PruneConfig, context: Context) -> list[Node]:
        dense = context.dense_handle()
        made = prune_run_handle(dense, value, context.runtime.runs_dir).run.name
        return [Node(made, _prune, (context, value), (dense.run.name,), kind="prune", runs=(made,))]

    def result(self, value: PruneConfig, context: Context) -> PruneRun:
        return prune(context.dense(), value, context.runtime)

    def describe(self, result: PruneRun) -> Described:
        return describe_prune(result), {"prune": {"run_dir": str(result.path), "metrics": result.summary}}


def _prune(context: Context, value: PruneConfig) -> None:
    prune(context.dense(context.input_runtime), value, context.node_runtime)


def describe_prune(result: PruneRun) -> list[str]:
    summary, cfg = result.summary, result.config
    masked, dense = summary["masked"], summary["dense"]
    return [
        f"{'finished earlier: ' if result.cached else ''}pruned {100 * summary['sparsity']:.2f}% of "
        f"{summary['total']:,} entries of {result.train.run.name} by {cfg.criterion} ({cfg.scope}, scores at {cfg.at})",
        *("  " + line for line in result.run.file(paths.MASK_REPORT).read_text().splitlines()),
        *(["  units kept: " + ", ".join(f"{g} {c['kept']}/{c['total']}" for g, c in summary["units"].items()),
           f"  unit sparsity {100 * summary['unit_sparsity']:.1f}% (target {100 * cfg.sparsity:g}%); parameter "
           f"sparsity {100 * summary['parameter_sparsity']:.1f}% of all the network's parameters"]
          if "unit_sparsity" in summary else []),
        *([f"  warning: {', '.join(summary['guarded'])} kept only the 1 entry that the empty-layer guard keeps"]
          if summary.get("guarded") else []),
        f"  masked, no retraining: val acc {masked['val_acc']:.4f}, test acc {masked['test_acc']:.4f} "
        f"(dense at {cfg.at}: val acc {dense['val_acc']:.4f}, test acc {dense['test_acc']:.4f})",
        f"  run: {result.path}",
    ]


SECTION = PruneSection()
