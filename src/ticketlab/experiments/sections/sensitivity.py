"""The `sensitivity` section: each layer of the dense run pruned alone over a ladder of
sparsities, without retraining (analysis/sensitivity.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ticketlab.analysis.sensitivity import LADDER, Sensitivity, check_ladder, sensitivity, sensitivity_identity
from ticketlab.config import TicketlabError
from ticketlab.experiments.sections.base import Context, Described, Section, mapping
from ticketlab.experiments.study import Node

KEYS = ("ladder", "step")


@dataclass(frozen=True)
class SensitivityPlan:
    ladder: tuple[float, ...] = LADDER
    step: str = "best"


class SensitivitySection(Section):
    name = "sensitivity"

    def parse(self, raw: Mapping[str, Any], preset: str) -> SensitivityPlan:
        section = mapping(raw["sensitivity"], f"{preset}: sensitivity")
        extra = set(section) - set(KEYS)
        ladder = section.get("ladder", list(LADDER))
        if extra or not isinstance(ladder, list):
            raise TicketlabError(f"{preset}: sensitivity takes ladder (a list of sparsities in (0, 1)) and step")
        return SensitivityPlan(tuple(ladder), str(section.get("step", "best")))

    def check(self, value: SensitivityPlan) -> None:
        check_ladder(value.ladder)

    def nodes(self, value: SensitivityPlan, context: Context) -> list[Node]:
        dense = context.dense_handle()
        made = Sensitivity.run_for(sensitivity_identity(dense, check_ladder(value.ladder), value.step),
                                   context.runtime.runs_dir)
        return [Node(made.name, _sensitivity, (context, value), (dense.run.name,), kind="sensitivity",
                     runs=(made.name,))]

    def result(self, value: SensitivityPlan, context: Context) -> Sensitivity:
        return sensitivity(context.dense(), value.ladder, step=value.step, runtime=context.runtime)

    def describe(self, result: Sensitivity) -> Described:
        ladder = sorted({row["sparsity"] for row in result.rows})
        lines = [f"layer sensitivity without retraining (dense val acc {result.summary['dense_val_acc']:.4f}); "
                 "validation accuracy with one layer pruned:",
                 f"  {'layer':<24}" + "".join(f"{k:>8g}" for k in ladder)]
        for layer in dict.fromkeys(row["layer"] for row in result.rows):
            accuracy = {row["sparsity"]: row["val_acc"] for row in result.rows if row["layer"] == layer}
            lines.append(f"  {layer:<24}" + "".join(f"{accuracy[k]:>8.4f}" for k in ladder))
        lines.append(f"  table: {result.path}")
        return lines, {"sensitivity": {"run_dir": str(result.path), "rows": result.rows}}


def _sensitivity(context: Context, value: SensitivityPlan) -> None:
    sensitivity(context.dense(context.input_runtime), value.ladder, step=value.step, runtime=context.node_runtime)


SECTION = SensitivitySection()
