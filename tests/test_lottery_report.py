import csv
import json
import math
import os

import pytest

from ticketlab.config import DataConfig, LotteryConfig, ModelConfig, Runtime, TrainConfig
from ticketlab.lottery.experiment import LotteryExperiment, run_lottery
from ticketlab.lottery.report import COLUMNS, compare_schedules, lottery_rows, write_report
from ticketlab.sparsity.schedules import round_rate

DIGITS = DataConfig(name="digits")
LENET = ModelConfig(name="lenet300_100")
SHORT = TrainConfig(steps="2ep", eval_every="3it")  # evaluating often spreads the early-stop iterations


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """Two replicates of a two-level lottery on digits with two controls on level 2, and its report."""
    runtime = Runtime(runs_dir=str(tmp_path_factory.mktemp("runs")), progress=False)
    with pytest.MonkeyPatch.context() as patch:  # conftest's isolation is per test; a module fixture outlives one
        patch.setenv("TICKETLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        experiment = run_lottery(DIGITS, LENET, SHORT, LotteryConfig(levels=2), runtime, replicates=2,
                                 controls=["reinit", "random_mask"], control_levels=[2])
        report = write_report(experiment, runtime)
    return experiment, report, runtime


def summaries(experiment, procedure, level):
    if procedure == "ticket":
        return [result.levels[level].summary for result in experiment.lotteries]
    return [experiment.controls[(replicate, level, procedure)].summary for replicate in (0, 1)]


def test_one_row_per_procedure_and_level_tickets_first(reported):
    _, report, _ = reported
    assert all(tuple(row) == COLUMNS for row in report.rows)
    assert [(row["procedure"], row["level"], row["n"]) for row in report.rows] == [
        ("ticket", 0, 2), ("ticket", 1, 2), ("ticket", 2, 2), ("reinit", 2, 2), ("random_mask", 2, 2)]


def test_means_and_sample_deviations_over_replicates(reported):
    experiment, report, _ = reported
    for row in report.rows:
        first, second = summaries(experiment, row["procedure"], row["level"])
        for column, (a, b) in {"test_acc": (first["best"]["test_acc"], second["best"]["test_acc"]),
                               "early_stop": (first["best"]["iteration"], second["best"]["iteration"]),
                               "final_test_acc": (first["final"]["test_acc"], second["final"]["test_acc"])}.items():
            assert row[f"{column}_mean"] == pytest.approx((a + b) / 2)
            assert row[f"{column}_std"] == pytest.approx(abs(a - b) / math.sqrt(2))  # ddof=1 for two values
        assert row["remaining_pct"] == pytest.approx(100 * first.get("remaining", 1.0))
    assert report.rows[0]["remaining_pct"] == 100
    assert [row["remaining_pct"] for row in report.rows[1:]] == pytest.approx([80, 64, 64, 64], abs=0.01)
    assert any(row["test_acc_std"] > 0 for row in report.rows)
    assert any(row["early_stop_std"] > 0 for row in report.rows)


def test_a_single_replicate_has_zero_deviations(reported):
    experiment, _, _ = reported
    single = LotteryExperiment(experiment.config, experiment.lotteries[:1])
    rows = lottery_rows(single)
    assert [row["n"] for row in rows] == [1, 1, 1]
    assert all(row[c] == 0.0 for row in rows for c in COLUMNS if c.endswith("_std"))
    assert [row["test_acc_mean"] for row in rows] == [level.summary["best"]["test_acc"]
                                                     for level in experiment.lotteries[0].levels]


def test_files_written_table_and_summary(reported):
    experiment, report, _ = reported
    with open(report.path / "table.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS
        table = list(reader)
    assert [(r["procedure"], int(r["level"])) for r in table] == [(r["procedure"], r["level"]) for r in report.rows]
    assert [float(r["test_acc_mean"]) for r in table] == [r["test_acc_mean"] for r in report.rows]
    summary = json.loads((report.path / "summary.json").read_text())
    assert summary["rows"] == report.rows and summary["replicates"] == 2
    assert summary["controls"] == ["reinit", "random_mask"]
    hparams = json.loads((report.path / "hparams.json").read_text())
    assert hparams["kind"] == "lottery" and len(hparams["identity"]["runs"]) == 2 * 3 + 2 * 2


def test_the_same_runs_give_the_same_report_and_other_runs_another(reported):
    experiment, report, runtime = reported
    stamp = os.stat(report.path / "table.csv").st_mtime_ns
    again = write_report(experiment, runtime)
    assert again.path == report.path and again.rows == report.rows
    assert os.stat(report.path / "table.csv").st_mtime_ns == stamp
    tickets_only = write_report(LotteryExperiment(experiment.config, experiment.lotteries), runtime)
    assert tickets_only.path != report.path and (tickets_only.path / "table.csv").exists()


def test_one_shot_and_iterative_reach_the_same_sparsity(tmp_path):
    runtime = Runtime(runs_dir=str(tmp_path), progress=False)
    rows = compare_schedules(DIGITS, LENET, TrainConfig(steps="1ep"), 0.8, 3, runtime)
    assert [(row["schedule"], row["levels"], row["level"]) for row in rows] == [("one-shot", 1, 1),
                                                                                ("iterative", 3, 3)]
    assert [row["rate"] for row in rows] == [0.8, round_rate(0.8, 3)]
    weights = 64 * 300 + 300 * 100 + 100 * 10
    assert [row["remaining_pct"] for row in rows] == pytest.approx([20, 20], abs=100 / weights)
    kept_output = compare_schedules(DIGITS, LENET, TrainConfig(steps="1ep"), 0.8, 3, runtime, output_sparsity=0.0)
    hidden = 64 * 300 + 300 * 100
    assert [row["remaining_pct"] for row in kept_output] == pytest.approx([100 * (0.2 * hidden + 1000) / weights] * 2,
                                                                         abs=100 / weights)
    assert all(0.1 < row["test_acc_mean"] <= 1 and row["early_stop_mean"] > 0 for row in rows)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("train-")]) == 1  # one dense run for both
