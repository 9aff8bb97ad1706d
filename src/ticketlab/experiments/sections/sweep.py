"""The `sweep` section: the dense run pruned by weight and by unit magnitude at each k, without
retraining (seed 003's experiment 1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ticketlab.analysis.sweep import DEFAULT_KS, SweepResult, normalise_ks, sweep, sweep_identity
from ticketlab.config import TicketlabError
from ticketlab.experiments.sections.base import Context, Described, Section, mapping
from ticketlab.experiments.study import Node

KEYS = ("ks", "step")


@dataclass(frozen=True)
class Sweep:
    ks: tuple[float, ...] = DEFAULT_KS
    step: str = "best"


class SweepSection(Section):
    name = "sweep"

    def parse(self, raw: Mapping[str, Any], preset: str) -> Sweep:
        section = mapping(raw["sweep"], f"{preset}: sweep")
        extra = set(section) - set(KEYS)
        if extra:
            raise TicketlabError(f"{preset}: sweep: unknown key(s) {', '.join(sorted(extra))}; "
                                 f"expected some of {', '.join(KEYS)}")
        ks = section.get("ks", list(DEFAULT_KS))
        if not isinstance(ks, list):
            raise TicketlabError(f"{preset}: sweep: ks must be a list of sparsities in [0, 1), got {ks!r}")
        return Sweep(tuple(ks), str(section.get("step", "best")))

    def check(self, value: Sweep) -> None:
        normalise_ks(value.ks)

    def nodes(self, value: Sweep, context: Context) -> list[Node]:
        dense = context.dense_handle()
        made = SweepResult.run_for(sweep_identity(dense, normalise_ks(value.ks), value.step), context.runtime.runs_dir)
        return [Node(made.name, _sweep, (context, value), (dense.run.name,), kind="sweep", runs=(made.name,))]

    def result(self, value: Sweep, context: Context) -> SweepResult:
        return sweep(context.dense(), value.ks, step=value.step, runtime=context.runtime)

    def describe(self, result: SweepResult) -> Described:
        return describe_sweep(result), {"sweep": {"run_dir": str(result.path), "rows": result.rows}}


def _sweep(context: Context, value: Sweep) -> None:
    sweep(context.dense(context.input_runtime), value.ks, step=value.step, runtime=context.node_runtime)


def describe_sweep(result: SweepResult) -> list[str]:
    lines = [f"{'finished earlier: ' if result.cached else ''}sweep without retraining "
             f"(dense test acc {result.dense_test_acc:.4f}); test accuracy by k:",
             f"  {'k':>6} {'weight':>8} {'unit':>8}"]
    by_k: dict[float, dict[str, float]] = {}
    for row in result.rows:
        by_k.setdefault(float(row["k"]), {})[row["method"]] = float(row["test_acc"])
    lines += [f"  {k:>6g} {acc.get('weight', float('nan')):>8.4f} {acc.get('unit', float('nan')):>8.4f}"
              for k, acc in by_k.items()]
    lines.append(f"  table, histograms: {result.path}")
    return lines


SECTION = SweepSection()
