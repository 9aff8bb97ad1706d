"""Studies: a preset's independent stages on worker processes give the runs and metrics a serial
run gives; a failing node is reported and skips only what needs it."""

import json
import os

import pytest

from ticketlab.cli import main
from ticketlab.config import TicketlabError
from ticketlab.experiments.study import RETRIES, Node, check_workers, run_study

COMPARISON = """\
description: two masks at two sparsities on two seeds, for the study tests
data: {name: digits}
model: {name: lenet300_100}
train: {steps: 60it, batch_size: 32, save_at: 0it}
replicates: 2
compare:
  sparsities: [0.5, 0.8]
  methods:
    - {name: magnitude, prune: {criterion: magnitude}}
    - {name: random, prune: {criterion: random}}
"""


LOTTERY = """\
description: two replicates of a 2-level lottery with its reinit control, for the study tests
data: {name: digits}
model: {name: lenet300_100}
train: {steps: 60it, batch_size: 32}
replicates: 2
controls: [reinit]
lottery: {levels: 2, rate: 0.5}
"""


def finished(root):
    return {p.name: json.loads((p / "summary.json").read_text()) for p in root.iterdir()
            if (p / "summary.json").exists()}


def comparable(summary):
    """A summary without what differs between two identical runs: wall-clock time and thread placement."""
    drop = {"wall_time", "seconds", "evaluations_per_s"}
    if isinstance(summary, dict):
        return {k: comparable(v) for k, v in summary.items() if k not in drop}
    if isinstance(summary, list):
        return [comparable(v) for v in summary]
    return summary


@pytest.mark.parametrize("section, text, runs, table", [
    ("comparison", COMPARISON, 2 + 2 * 2 * 2 * 2 + 1, "comparison"),  # trains, masks, tickets, report
    ("lottery", LOTTERY, 2 + 2 * 2 + 2 * 2 + 1, "lottery"),  # trains, levels, controls, report
])
def test_two_workers_make_the_same_runs_and_metrics_as_one(section, text, runs, table, tmp_path, capsys):
    preset = tmp_path / f"{section}.yaml"
    preset.write_text(text)
    results = {}
    for workers in (1, 2):
        root = tmp_path / f"runs{workers}"
        assert main(["run", str(preset), "--workers", str(workers), "--quiet", "--json",
                     "--runs-dir", str(root)]) == 0
        out = capsys.readouterr()
        results[workers] = (finished(root), json.loads(out.out.splitlines()[-1])[table]["rows"])
        assert "study:" not in out.err  # --quiet: no progress lines
    (serial, serial_rows), (parallel, parallel_rows) = results[1], results[2]
    assert sorted(serial) == sorted(parallel) and len(serial) == runs
    assert {name: comparable(s) for name, s in serial.items()} == {name: comparable(s) for name, s in parallel.items()}
    assert serial_rows == parallel_rows


def _ok(marker):
    marker.write_text("done")


def _fail(message):
    raise TicketlabError(message)


def test_a_failing_node_is_reported_its_dependants_skipped_and_its_siblings_done(tmp_path, capsys):
    nodes = [Node("a", _ok, (tmp_path / "a",)), Node("bad", _fail, ("no data here",)),
             Node("needs-bad", _ok, (tmp_path / "c",), ("bad",)), Node("needs-a", _ok, (tmp_path / "d",), ("a",))]
    for workers in (1, 2):
        outcome = run_study(nodes, workers)
        assert sorted(outcome.done) == ["a", "needs-a"] and outcome.failed == {"bad": "no data here"}
        assert outcome.skipped == ["needs-bad"] and not (tmp_path / "c").exists()
        err = capsys.readouterr().err
        assert "bad failed: no data here" in err and "study: 2 done, 0 running, 1 failed, 0 pending of 4" in err


@pytest.mark.parametrize("workers", [1, 2])
def test_nodes_that_need_each_other_are_skipped_not_waited_for(workers, tmp_path):
    nodes = [Node("a", _ok, (tmp_path / "a",)), Node("x", _ok, (tmp_path / "x",), ("y",)),
             Node("y", _ok, (tmp_path / "y",), ("x",))]
    outcome = run_study(nodes, workers, progress=False)
    assert outcome.done == ["a"] and sorted(outcome.skipped) == ["x", "y"] and not outcome.failed


def _die_once(marker):
    """Kill this worker process the first time (as an out-of-memory kill would); succeed after."""
    if not marker.exists():
        marker.write_text("died once")
        os._exit(9)
    (marker.parent / "survived").write_text("yes")


def _die_always(marker):
    os._exit(9)


def test_a_node_whose_worker_dies_runs_again_and_one_that_always_kills_it_fails(tmp_path, capsys):
    nodes = [Node("dies once", _die_once, (tmp_path / "marker",)), Node("sibling", _ok, (tmp_path / "s",)),
             Node("after", _ok, (tmp_path / "after",), ("dies once",))]
    outcome = run_study(nodes, 2, progress=False)
    assert sorted(outcome.done) == ["after", "dies once", "sibling"] and not outcome.failed
    assert (tmp_path / "survived").exists() and "dies once: its worker process died; running it again" in \
        capsys.readouterr().err
    outcome = run_study([Node("killer", _die_always, (tmp_path / "k",))], 2, progress=False)
    assert list(outcome.failed) == ["killer"] and f"died {RETRIES + 1} times" in outcome.failed["killer"]


def test_bad_studies_and_worker_counts_are_one_line_errors():
    with pytest.raises(TicketlabError, match="names a run twice"):
        run_study([Node("a", _ok, ("x",)), Node("a", _ok, ("y",))])
    with pytest.raises(TicketlabError, match="need runs it does not make: z"):
        run_study([Node("a", _ok, ("x",), ("z",))])
    with pytest.raises(TicketlabError, match="more than this machine's"):
        check_workers(64, 4)
    with pytest.raises(TicketlabError, match="at least 1"):
        check_workers(0, 1)


class DieAtEpoch:
    """Kills the process at the end of an epoch, the first time only (the last resume point is the epoch before)."""

    def __init__(self, epoch, marker):
        self.epoch, self.marker = epoch, marker

    def on_epoch_end(self, epoch, model):
        if epoch == self.epoch and not self.marker.exists():
            self.marker.write_text("died")
            os._exit(9)
        return False

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _train_dying(data, model, training, runtime, marker):
    from ticketlab.training.stage import run_training, train_run_handle

    handle = train_run_handle(data, model, training, runtime.runs_dir)
    run_training(handle.run, data, model, training, runtime, callbacks=[DieAtEpoch(3, marker)])


def test_a_training_whose_worker_dies_resumes_on_retry_and_ends_as_an_undisturbed_one(tmp_path):
    import torch

    from ticketlab.config import DataConfig, ModelConfig, Runtime, TrainConfig
    from ticketlab.training.stage import train

    data, model, training = DataConfig(name="digits"), ModelConfig(), TrainConfig(steps="4ep", batch_size=64)
    runtime = Runtime(runs_dir=str(tmp_path / "retried"), progress=False)
    outcome = run_study([Node("train", _train_dying, (data, model, training, runtime, tmp_path / "died"))], 2,
                        progress=False)
    assert outcome.done == ["train"] and (tmp_path / "died").exists()
    retried = train(data, model, training, runtime)
    assert retried.cached
    undisturbed = train(data, model, training, Runtime(runs_dir=str(tmp_path / "undisturbed"), progress=False))
    assert comparable(retried.summary) == comparable(undisturbed.summary)
    for key, tensor in undisturbed.state_dict("final").items():
        assert torch.equal(retried.state_dict("final")[key], tensor)
