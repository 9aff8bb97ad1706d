"""The `lottery` section (with `controls` and `control_levels`): iterative magnitude pruning with
rewinding on each replicate's dense run, and the controls on chosen levels, in a table."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ticketlab.config import LotteryConfig, TicketlabError, TrainConfig, coerce, from_dict
from ticketlab.experiments.sections.base import Context, Described, Section, mapping, mean_std
from ticketlab.experiments.study import Node
from ticketlab.lottery.controls import control, control_run
from ticketlab.lottery.experiment import check_experiment, control_levels_of, replicate_training, run_lottery
from ticketlab.lottery.levels import level_run, lottery
from ticketlab.lottery.report import LotteryReport, write_report
from ticketlab.training.stage import train, train_run_handle


@dataclass(frozen=True)
class LotteryPlan:
    config: LotteryConfig
    controls: tuple[str, ...] = ()
    control_levels: tuple[int, ...] | None = None  # None: every pruned level


def _controls(value: Any, preset: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TicketlabError(f"{preset}: controls must be a list")
    return tuple(str(v) for v in value)


def _control_levels(value: Any, preset: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise TicketlabError(f"{preset}: control_levels must be a list")
    return tuple(coerce(v, int, f"{preset}: control_levels") for v in value)


class LotterySection(Section):
    name = "lottery"
    keys = ("controls", "control_levels")

    def parse(self, raw: Mapping[str, Any], preset: str) -> LotteryPlan:
        if "lottery" not in raw:
            raise TicketlabError(f"{preset}: {', '.join(k for k in self.keys if k in raw)} need a lottery section")
        cfg = from_dict(LotteryConfig, mapping(raw["lottery"], f"{preset}: lottery"), f"{preset}: lottery")
        return LotteryPlan(cfg, _controls(raw.get("controls", []), preset),
                           _control_levels(raw["control_levels"], preset) if "control_levels" in raw else None)

    def smoke(self, value: LotteryPlan | None, overrides: Mapping[str, Any], preset: str) -> LotteryPlan:
        if value is None:
            return super().smoke(value, overrides, preset)
        if "lottery" in overrides:
            changed = {**dataclasses.asdict(value.config), **mapping(overrides["lottery"], f"{preset}: smoke.lottery")}
            value = dataclasses.replace(value, config=from_dict(LotteryConfig, changed, f"{preset}: smoke.lottery"))
        if "controls" in overrides:
            value = dataclasses.replace(value, controls=_controls(overrides["controls"], preset))
        if "control_levels" in overrides:
            value = dataclasses.replace(value, control_levels=_control_levels(overrides["control_levels"], preset))
        return value

    def check(self, value: LotteryPlan) -> None:
        check_experiment(value.config, value.controls, value.control_levels)

    def nodes(self, value: LotteryPlan, context: Context) -> list[Node]:
        """Each replicate's dense training, then its chain of levels (each level needs the one
        before), then each control of each level, which needs only that replicate's chain."""
        cfg, runs_dir = value.config, context.runtime.runs_dir
        nodes = []
        for replicate in range(context.replicates):
            seeded = replicate_training(context.training, cfg, replicate)
            dense = train_run_handle(context.data, context.model, seeded, runs_dir, context.runtime.data_dir)
            levels = [level_run(dense, cfg, number, context.runtime) for number in range(1, cfg.levels + 1)]
            chain = f"{dense.run.name}: lottery of {cfg.levels} levels"
            nodes += [Node(dense.run.name, train, (context.data, context.model, seeded, context.node_runtime),
                           kind="train", runs=(dense.run.name,), trainings=1),
                      Node(chain, _levels, (context, seeded, cfg), (dense.run.name,), kind="lottery",
                           runs=tuple(level.name for level in levels), trainings=cfg.levels)]
            for level in control_levels_of(cfg, value.control_levels):
                for name in value.controls:
                    made = control_run(levels[level - 1].name, name, runs_dir)
                    nodes.append(Node(f"{dense.run.name}: {name} of level {level}", _control,
                                      (context, seeded, cfg, level, name), (chain,), kind="control",
                                      runs=(made.name,), trainings=1))
        return nodes

    def result(self, value: LotteryPlan, context: Context) -> LotteryReport:
        experiment = run_lottery(context.data, context.model, context.training, value.config, context.runtime,
                                 replicates=context.replicates, controls=value.controls,
                                 control_levels=value.control_levels)
        return write_report(experiment, dataclasses.replace(context.runtime, force=context.redo_reports))

    def describe(self, result: LotteryReport) -> Described:
        return describe_lottery(result), {"lottery": {"run_dir": str(result.path), "rows": result.rows}}


def _levels(context: Context, training: TrainConfig, cfg: LotteryConfig) -> None:
    lottery(train(context.data, context.model, training, context.input_runtime), cfg, context.node_runtime)


def _control(context: Context, training: TrainConfig, cfg: LotteryConfig, level: int, name: str) -> None:
    inputs = context.input_runtime
    control(lottery(train(context.data, context.model, training, inputs), cfg, inputs), level, name,
            context.node_runtime)


def describe_lottery(report: LotteryReport) -> list[str]:
    lines = ["lottery (test accuracy at the early-stop step, mean ± std over replicates):",
             f"  {'procedure':<17} {'level':>5} {'remaining':>9} {'test acc':>17} {'early stop (it)':>19}"]
    for row in report.rows:
        lines.append(f"  {row['procedure']:<17} {row['level']:>5} {row['remaining_pct']:>8.1f}% "
                     f"{mean_std(row['test_acc_mean'], row['test_acc_std'], row['n']):>17} "
                     f"{mean_std(row['early_stop_mean'], row['early_stop_std'], row['n'], 0):>19}")
    lines.append(f"  table: {report.path}")
    return lines


SECTION = LotterySection()
