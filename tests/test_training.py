import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ticketlab.config import DataConfig, ModelConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.data import load_data
from ticketlab.store import load_checkpoint
from ticketlab.training.loop import fit
from ticketlab.training.stage import init_model, train, with_checkpoints

DIGITS = DataConfig(name="digits")
LENET = ModelConfig(name="lenet300_100")


def quiet(tmp_path: Path, **kwargs) -> Runtime:
    return Runtime(runs_dir=str(tmp_path / "runs"), progress=False, **kwargs)


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(handle)]


def test_loss_falls_within_one_epoch_on_mnist5k(tmp_path):
    run = train(DataConfig(name="mnist5k"), LENET, TrainConfig(steps="1ep"), quiet(tmp_path))
    init, one_epoch = metric_rows(run.path)
    assert float(one_epoch["val_loss"]) < 0.5 * float(init["val_loss"])
    assert float(one_epoch["val_acc"]) > 0.8


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    cfg = TrainConfig(steps="2ep", batch_size=64)
    first = train(DIGITS, LENET, cfg, quiet(tmp_path / "a"))
    again = train(DIGITS, LENET, cfg, quiet(tmp_path / "b"))
    other = train(DIGITS, LENET, TrainConfig(steps="2ep", batch_size=64, seed=1), quiet(tmp_path / "a"))
    assert metric_rows(first.path) == metric_rows(again.path)
    assert metric_rows(first.path) != metric_rows(other.path)


def test_finished_run_returns_at_once_and_force_redoes_it(tmp_path):
    cfg = TrainConfig(steps="1ep")
    first = train(DIGITS, LENET, cfg, quiet(tmp_path))
    final = first.path / "checkpoints" / "final.pt"
    stamp = final.stat().st_mtime_ns
    again = train(DIGITS, LENET, cfg, quiet(tmp_path))
    assert again.cached and again.path == first.path and again.summary == first.summary
    assert final.stat().st_mtime_ns == stamp
    forced = train(DIGITS, LENET, cfg, quiet(tmp_path, force=True))
    assert not forced.cached and final.stat().st_mtime_ns != stamp
    assert forced.summary["final"]["val_loss"] == first.summary["final"]["val_loss"]


def test_checkpoints_at_listed_steps_and_the_init_is_the_seeded_init(tmp_path):
    run = train(DIGITS, LENET, TrainConfig(steps="3ep", save_at="0it,1ep,1ep5it"), quiet(tmp_path))
    saved = sorted(p.stem for p in (run.path / "checkpoints").glob("*.pt"))
    assert saved == ["0it", "1ep", "1ep5it", "best", "final"]
    data = load_data(DIGITS)
    expected = init_model(LENET, data, seed=0).state_dict()
    init = run.state_dict("0it")
    assert all(torch.equal(init[k], expected[k]) for k in expected)
    after_one_epoch = run.state_dict("1ep")
    assert all(not torch.equal(after_one_epoch[k], init[k]) for k in init)
    assert not (run.path / "resume.pt").exists()
    with pytest.raises(TicketlabError, match="no checkpoint '2ep'.*--save-at"):
        run.state_dict("2ep")


def test_best_step_is_chosen_on_validation_not_test(tmp_path):
    run = train(DIGITS, LENET, TrainConfig(steps="4ep", select_by="val_acc"), quiet(tmp_path))
    rows = metric_rows(run.path)
    best_val = max(float(r["val_acc"]) for r in rows)
    assert run.summary["best"]["val_acc"] == best_val
    best = load_checkpoint(run.path / "checkpoints" / "best.pt")
    assert best["iteration"] == run.summary["best"]["iteration"]


def test_save_step_after_the_end_and_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(TicketlabError, match="after the end of training"):
        train(DIGITS, LENET, TrainConfig(steps="1ep", save_at="2ep"), quiet(tmp_path))
    with pytest.raises(TicketlabError, match="unknown optimizer"):
        train(DIGITS, LENET, TrainConfig(optimizer="lion"), quiet(tmp_path))


def test_l1_penalty_shrinks_the_weights(tmp_path):
    data = load_data(DIGITS)
    norms = {}
    for l1 in (0.0, 1e-2):
        model = init_model(LENET, data, seed=0)
        fit(model, data, TrainConfig(steps="2ep", l1=l1), progress=False)
        norms[l1] = sum(p.abs().sum().item() for n, p in model.named_parameters() if n.endswith("weight"))
    assert norms[1e-2] < 0.7 * norms[0.0]


@pytest.mark.parametrize("optimizer, extra", [("sgd", {"momentum": 0.9, "nesterov": True}), ("adadelta", {"lr": 1.0})])
def test_other_optimizers_learn(optimizer, extra):
    data = load_data(DIGITS)
    model = init_model(LENET, data, seed=0)
    summary = fit(model, data, TrainConfig(steps="3ep", optimizer=optimizer, **{"lr": 0.05, **extra}), progress=False)
    assert summary["best"]["val_acc"] > 0.85


def test_fit_works_on_a_users_own_module():
    data = load_data(DIGITS)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    summary = fit(model, data, TrainConfig(steps="5ep", lr=1e-2, l2=1e-4), progress=False)
    assert summary["best"]["val_acc"] > 0.8


def test_a_run_killed_mid_training_resumes_and_ends_identical(tmp_path):
    cfg_args = ["--dataset", "digits", "--epochs", "40", "--batch-size", "32", "--save-at", "0it,5ep",
                "--quiet", "--runs-dir", str(tmp_path / "killed")]
    process = subprocess.Popen([sys.executable, "-m", "ticketlab.cli", "train", *cfg_args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dirs = tmp_path / "killed"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        metrics = list(run_dirs.glob("*/metrics.csv"))
        if metrics and len(metrics[0].read_text().splitlines()) >= 4:  # header + init + 2 epochs
            break
        time.sleep(0.005)
    assert process.poll() is None, "training finished before it could be killed: make it longer"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    (run_dir,) = run_dirs.iterdir()
    assert not (run_dir / "summary.json").exists() and (run_dir / "resume.pt").exists()
    done_before = len(metric_rows(run_dir))

    resumed = subprocess.run([sys.executable, "-m", "ticketlab.cli", "train", *cfg_args],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = train(DIGITS, LENET, TrainConfig(steps="40ep", batch_size=32, save_at="0it,5ep"),
                          quiet(tmp_path / "clean"))
    assert 2 <= done_before - 1 < 40
    assert metric_rows(run_dir) == metric_rows(uninterrupted.path)
    for step in ("0it", "5ep", "final"):
        a = load_checkpoint(run_dir / "checkpoints" / f"{step}.pt")["model"]
        b = uninterrupted.state_dict(step)
        assert all(torch.equal(a[k], b[k]) for k in b)


def test_training_restarted_mid_epoch_from_a_saved_step_continues_the_same_run(tmp_path):
    # Plain SGD has no optimiser state, so weights at step k plus the data order from k on
    # are all a restart needs: it must end bit-identical to the run it came from.
    cfg = TrainConfig(steps="3ep", optimizer="sgd", lr=0.05, save_at="1ep5it")
    original = train(DIGITS, LENET, cfg, quiet(tmp_path))
    data = load_data(DIGITS)
    model = init_model(LENET, data, seed=0)
    model.load_state_dict(original.state_dict("1ep5it"))
    per_epoch = original.summary["iterations_per_epoch"]
    summary = fit(model, data, cfg, progress=False, start_iteration=per_epoch + 5)
    final = original.state_dict("final")
    assert all(torch.equal(model.state_dict()[k], final[k]) for k in final)
    assert summary["final"]["val_loss"] == original.summary["final"]["val_loss"]
    with pytest.raises(TicketlabError, match="cannot start at iteration"):
        fit(model, data, cfg, progress=False, start_iteration=3 * per_epoch)


def test_evaluation_every_n_iterations_finds_the_early_stop_iteration(tmp_path):
    run = train(DIGITS, LENET, TrainConfig(steps="2ep", eval_every="10it"), quiet(tmp_path))
    rows = metric_rows(run.path)
    per_epoch = run.summary["iterations_per_epoch"]
    # Every 10 iterations and at each epoch end, except a point within 5 iterations before an epoch end.
    mid = [i for i in range(10, 2 * per_epoch, 10) if -i % per_epoch >= 5]
    expected = sorted({0, *mid, per_epoch, 2 * per_epoch})
    assert len(mid) < len(range(10, 2 * per_epoch, 10))  # some were that close: the rule is exercised
    assert [int(r["iteration"]) for r in rows] == expected
    # epoch: the epochs trained at the row, mid-epoch rows as fractions
    assert [float(r["epoch"]) for r in rows] == [round(i / per_epoch, 4) for i in expected]
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert run.summary["best"]["iteration"] == int(best["iteration"])


def test_with_checkpoints_adds_only_missing_steps_and_keeps_the_users_text():
    cfg = TrainConfig(save_at="1ep,0it")
    assert with_checkpoints(cfg, ["0it", "best"]) is cfg
    assert with_checkpoints(cfg, ["500it", "0it", "500it"]).save_at == "1ep,0it,500it"
    assert with_checkpoints(TrainConfig(save_at=""), ["3ep"]).save_at == "3ep"
