"""The lottery's table: accuracy and learning speed against the weights remaining.

For each procedure (the tickets, level 0 being the dense network, and each control) and
level, the mean and spread over replicates of the test accuracy at early stop (the step
of best validation metric, `select_by`: nothing is selected on the test set), of the
early-stop iteration (the lottery-ticket paper's measure of how fast a network learns;
counted on the dense schedule, so a retraining from a late rewind point starts there) and
of the test accuracy at the end of training. `ticketlab report` draws it.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ticketlab import paths
from ticketlab.config import DataConfig, LotteryConfig, ModelConfig, Runtime, TrainConfig
from ticketlab.lottery.experiment import LotteryExperiment, run_lottery
from ticketlab.sparsity.schedules import round_rate
from ticketlab.stage import Stage
from ticketlab.store import atomic_write_text, csv_text

TICKET = "ticket"
COLUMNS = ("procedure", "level", "remaining_pct", "n", "test_acc_mean", "test_acc_std", "early_stop_mean",
           "early_stop_std", "final_test_acc_mean", "final_test_acc_std")


@dataclass
class LotteryReport(Stage):
    """A written report: its run and the rows of its table (COLUMNS)."""

    rows: list[dict[str, Any]]
    KIND = "lottery"
    ARTIFACTS = (paths.TABLE,)

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        """A report over other runs: its table's size (the metrics are in its rows)."""
        return (f"lottery report: {len(summary.get('rows', []))} rows, {summary.get('replicates', '?')} "
                "replicate(s)", {})


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def level_row(procedure: str, level: int, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One row (COLUMNS) of a procedure at a level, over the replicates' training summaries."""
    acc, acc_std = _mean_std([s["best"]["test_acc"] for s in summaries])
    stop, stop_std = _mean_std([s["best"]["iteration"] for s in summaries])
    final, final_std = _mean_std([s["final"]["test_acc"] for s in summaries])
    return {"procedure": procedure, "level": level,
            "remaining_pct": 100 * statistics.fmean(s.get("remaining", 1.0) for s in summaries),
            "n": len(summaries), "test_acc_mean": acc, "test_acc_std": acc_std, "early_stop_mean": stop,
            "early_stop_std": stop_std, "final_test_acc_mean": final, "final_test_acc_std": final_std}


def lottery_rows(experiment: LotteryExperiment) -> list[dict[str, Any]]:
    """One row (COLUMNS) per procedure and level: the tickets' levels from 0 (dense), then each control's.

    Means and sample standard deviations (ddof=1) are over the replicates, n of them; with
    n == 1 the deviations are 0.0. Test accuracy is read at the best-validation step.
    """
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for lottery in experiment.lotteries:
        for level in lottery.levels:
            groups.setdefault((TICKET, level.number), []).append(level.summary)
    for name in _control_names(experiment):
        for (_, level, control), done in sorted(experiment.controls.items()):
            if control == name:
                groups.setdefault((name, level), []).append(done.summary)
    return [level_row(procedure, level, summaries) for (procedure, level), summaries in groups.items()]


def _control_names(experiment: LotteryExperiment) -> list[str]:
    """The controls run, in the order they were asked for."""
    return list(dict.fromkeys(name for _, _, name in experiment.controls))


def _run_names(experiment: LotteryExperiment) -> list[str]:
    names = [lottery.dense.run.name for lottery in experiment.lotteries]
    names += [level.retrained.run.name for lottery in experiment.lotteries for level in lottery.levels[1:]]
    names += [done.run.name for done in experiment.controls.values()]
    return sorted(names)


def write_report(experiment: LotteryExperiment, runtime: Runtime = Runtime()) -> LotteryReport:
    """Write table.csv and summary.json of an experiment, or return the finished report.

    The report is a run named by the runs it summarises, so another set of levels,
    replicates or controls is another report.
    """
    rows = lottery_rows(experiment)
    report = LotteryReport(LotteryReport.run_for({"runs": _run_names(experiment)}, runtime.runs_dir), rows)
    out = report.run
    cfg = experiment.config

    def write(_: None) -> dict[str, Any]:
        atomic_write_text(out.file(paths.TABLE), csv_text(rows, COLUMNS))
        return {"replicates": len(experiment.lotteries), "controls": _control_names(experiment), "rows": rows}

    report.produce(runtime.force, lambda: ({"lottery": dataclasses.asdict(cfg)}, None), write)
    return report


def compare_schedules(data: DataConfig, model: ModelConfig, training: TrainConfig, sparsity: float, rounds: int,
                      runtime: Runtime = Runtime(), *, rewind: str = "0it", criterion: str = "magnitude",
                      scope: str = "global", output_sparsity: float | None = None,
                      replicates: int = 1) -> list[dict[str, Any]]:
    """One-shot versus iterative pruning to the same sparsity (seed 003, experiment 2).

    Runs two lotteries on the same dense runs: one level pruning `sparsity`, and `rounds`
    levels each pruning 1-(1-sparsity)^(1/rounds) of what remains; the output layer likewise
    to `output_sparsity` (default: like the other layers; 0: not pruned). Returns one row per
    schedule for its final level: `schedule`, `levels`, `rate`, then lottery_rows' columns.
    """
    def per_round(target: float | None, levels: int) -> float | None:
        # One level prunes the target as given: 1-(1-p)^1 can differ from p in the last bit, and so name another run.
        return target if target is None or levels == 1 else round_rate(target, levels)

    rows = []
    for schedule, levels in (("one-shot", 1), ("iterative", rounds)):
        rate = per_round(sparsity, levels)
        cfg = LotteryConfig(levels=levels, rate=rate, output_rate=per_round(output_sparsity, levels), scope=scope,
                            criterion=criterion, rewind=rewind)
        table = lottery_rows(run_lottery(data, model, training, cfg, runtime, replicates=replicates))
        final = next(row for row in table if row["level"] == levels)
        rows.append({"schedule": schedule, "levels": levels, "rate": rate, **final})
    return rows
