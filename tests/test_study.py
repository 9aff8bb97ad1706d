"""Studies: a preset's independent stages on worker processes give the runs and metrics a serial
run gives; a failing node is reported and skips only what needs it."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from ticketlab.cli import main
from ticketlab.config import TicketlabError
from ticketlab.experiments.sections import Section
from ticketlab.experiments.study import RETRIES, Node, check_workers, run_study
from study_helpers import COMPARISON, comparable, finished

LOTTERY = """\
description: two replicates of a 2-level lottery with its reinit control, for the study tests
data: {name: digits}
model: {name: lenet300_100}
train: {steps: 60it, batch_size: 32}
replicates: 2
controls: [reinit]
lottery: {levels: 2, rate: 0.5}
"""


@pytest.mark.parametrize("section, text, runs, table", [
    ("comparison", COMPARISON, 2 + 2 * 2 * 2 * 2 + 2 * 2 + 1, "comparison"),  # trains, masks, tickets, analyses, report
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
    run_training(handle, data, model, training, runtime, callbacks=[DieAtEpoch(3, marker)])


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


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for this module's Ray tests (a study joins it instead of starting its own)."""
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_makes_the_runs_and_metrics_of_a_serial_run(local_ray, tmp_path, capsys):
    preset = tmp_path / "comparison.yaml"
    preset.write_text(COMPARISON)
    results = {}
    for backend in ("local", "ray"):
        root = tmp_path / backend
        assert main(["run", str(preset), "--backend", backend, "--quiet", "--json", "--runs-dir", str(root)]) == 0
        rows = json.loads(capsys.readouterr().out.splitlines()[-1])["comparison"]["rows"]
        results[backend] = ({name: comparable(s) for name, s in finished(root).items()}, rows)
    assert results["local"] == results["ray"] and len(results["ray"][0]) == 2 + 2 * 2 * 2 * 2 + 2 * 2 + 1


def test_ray_runs_a_node_again_when_its_worker_dies_and_reports_failures(local_ray, tmp_path):
    nodes = [Node("dies once", _die_once, (tmp_path / "marker",)), Node("bad", _fail, ("no data here",)),
             Node("after", _ok, (tmp_path / "after",), ("dies once",)), Node("needs-bad", _ok, (tmp_path / "c",),
                                                                             ("bad",))]
    outcome = run_study(nodes, progress=False, backend="ray")
    assert sorted(outcome.done) == ["after", "dies once"] and (tmp_path / "survived").exists()
    assert outcome.failed == {"bad": "no data here"} and outcome.skipped == ["needs-bad"]
    outcome = run_study([Node("killer", _die_always, (tmp_path / "k",))], progress=False, backend="ray")
    assert list(outcome.failed) == ["killer"] and f"failed {RETRIES + 1} times" in outcome.failed["killer"]


@pytest.mark.parametrize("flags, message", [
    (["--backend", "ray", "--address", "127.0.0.1:1", "--runs-dir", "relative/runs"], "is relative"),
    (["--backend", "ray", "--address", "127.0.0.1:1", "--runs-dir", "/dev/shm/ticketlab-runs"], "tmpfs"),
    (["--address", "auto"], "give --backend ray"),
    (["--backend", "ray", "--workers", "2"], "--workers is for the local backend"),
    (["--backend", "ray", "--address", "127.0.0.1:1", "--runs-dir", "/RUNS"], "no Ray cluster answers at 127.0.0.1:1"),
    (["--backend", "dask"], "invalid choice"),
])
def test_a_cluster_needs_a_shared_absolute_runs_dir(flags, message, tmp_path, capsys, monkeypatch):
    if "/dev/shm" in " ".join(flags) and not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")
    monkeypatch.chdir(tmp_path)
    flags = [str(tmp_path / "runs") if flag == "/RUNS" else flag for flag in flags]
    preset = tmp_path / "comparison.yaml"
    preset.write_text(COMPARISON)
    assert main(["run", str(preset), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.rglob("summary.json")) and not os.path.exists("/dev/shm/ticketlab-runs")


def test_plan_shows_what_would_run_and_runs_nothing(tmp_path, capsys):
    preset = tmp_path / "lottery.yaml"
    preset.write_text(LOTTERY)
    root = tmp_path / "runs"
    assert main(["run", str(preset), "--plan", "--json", "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out
    plan = json.loads(out.splitlines()[-1])
    kinds = [node["kind"] for node in plan["nodes"]]
    assert kinds.count("train") == 2 and kinds.count("lottery") == 2 and kinds.count("control") == 4
    # 2 dense runs, 2 × 2 levels, 2 × 2 controls; nothing is done and nothing was written
    assert plan["to_run"] == {"nodes": 8, "trainings": 2 + 4 + 4, "evaluations": 0}
    assert all(node["state"] == "pending" for node in plan["nodes"]) and not root.exists()
    assert "lottery        2     0      2" in out
    assert main(["run", str(preset), "--quiet", "--runs-dir", str(root)]) == 0
    capsys.readouterr()
    assert main(["status", str(preset), "--json", "--runs-dir", str(root)]) == 0
    status = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert all(node["state"] == "done" for node in status["nodes"]) and status["to_run"]["trainings"] == 0
    assert Path(status["record"]).parent == root / "studies"


def test_a_driver_killed_mid_study_resumes_with_only_the_missing_nodes(tmp_path):
    """SIGKILL the driver (and its workers) once some nodes are done: status says which are done and
    which were interrupted; the same command then runs only what is missing, and the runs end as
    those of an undisturbed study."""
    preset = tmp_path / "lottery.yaml"
    preset.write_text(LOTTERY.replace("60it", "150it"))
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "ticketlab.cli", "run", str(preset), "--workers", "2", "--quiet",
               "--runs-dir", str(root)]
    driver = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # until the 2 dense runs and a level or more are done
    while time.time() < deadline and (not root.exists() or len(finished(root)) < 3):
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = {name: (root / name / "summary.json").stat().st_mtime_ns for name in finished(root)}
    assert 3 <= len(before) < 2 + 4 + 4
    status = subprocess.run([sys.executable, "-m", "ticketlab.cli", "status", str(preset), "--json", "--runs-dir",
                             str(root)], capture_output=True, text=True, check=True)
    states = {node["name"]: node["state"] for node in json.loads(status.stdout.splitlines()[-1])["nodes"]}
    assert "done" in states.values() and "interrupted" in states.values() and "running" not in states.values()
    subprocess.run(command, check=True)
    after = finished(root)
    assert all((root / name / "summary.json").stat().st_mtime_ns == made for name, made in before.items())
    assert main(["run", str(preset), "--quiet", "--runs-dir", str(tmp_path / "undisturbed")]) == 0
    undisturbed = finished(tmp_path / "undisturbed")
    assert {n: comparable(s) for n, s in after.items()} == {n: comparable(s) for n, s in undisturbed.items()}


class NormSection(Section):
    """A section as a user would add one: the dense run's weight norm, as a study node of its own."""

    name = "norm"

    def parse(self, raw, preset):
        return float(raw["norm"]["p"])

    def nodes(self, value, context):
        dense = context.dense_handle().run.name
        return [Node(f"{dense}: norm", _norm, (context, value), (dense,), kind="norm")]

    def result(self, value, context):
        return _norm(context, value)

    def describe(self, result):
        return [f"weight norm {result:.3f}"], {"norm": result}


def _norm(context, p):
    import torch

    weights = context.dense(context.node_runtime).state_dict("final")
    return float(torch.linalg.vector_norm(torch.cat([w.flatten() for w in weights.values()]), ord=p))


def test_a_new_section_is_one_class_and_one_registry_line(tmp_path, capsys, monkeypatch):
    from ticketlab.experiments.sections import SECTIONS

    monkeypatch.setitem(SECTIONS, "norm", NormSection())
    preset = tmp_path / "norm.yaml"
    preset.write_text("data: {name: digits}\nmodel: {name: lenet300_100}\ntrain: {steps: 20it}\nnorm: {p: 2}\n")
    assert main(["run", str(preset), "--plan", "--json", "--runs-dir", str(tmp_path)]) == 0
    plan = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [node["kind"] for node in plan["nodes"]] == ["train", "norm"]
    assert main(["run", str(preset), "--quiet", "--json", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "weight norm" in out and json.loads(out.splitlines()[-1])["norm"] > 0


def test_workers_that_die_as_they_start_are_one_line_error(tmp_path, monkeypatch):
    """A worker imports the nodes' modules as it starts; one that dies there (say, out of memory)
    ends the study with one line instead of a retry loop."""
    (tmp_path / "dies_on_import.py").write_text("import os\nos._exit(9)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    dying = types.FunctionType(_ok.__code__, {"__name__": "dies_on_import"})  # a node of that module
    with pytest.raises(TicketlabError, match="died as they started"):
        run_study([Node("a", dying, (tmp_path / "a",))], 2, progress=False)


def test_two_studies_sharing_a_stage_compute_it_once(tmp_path):
    """Two drivers at once over one runs directory, their presets sharing the dense run: the second
    waits for the first's (or finds it done) and never writes it; both studies finish."""
    dense = "data: {name: digits}\nmodel: {name: lenet300_100}\ntrain: {steps: 1500it, batch_size: 32}\n"
    (tmp_path / "a.yaml").write_text(dense + "lottery: {levels: 1, rate: 0.5}\n")
    (tmp_path / "b.yaml").write_text(dense + "prune: {criterion: magnitude, sparsity: 0.5}\n")
    root = tmp_path / "runs"

    def driver(name):
        return subprocess.Popen([sys.executable, "-m", "ticketlab.cli", "run", str(tmp_path / name), "--quiet",
                                 "--runs-dir", str(root)], stderr=subprocess.PIPE, text=True)

    first = driver("a.yaml")
    deadline = time.time() + 60
    while time.time() < deadline and not any(root.glob("train-*/.lock")):
        time.sleep(0.02)
    second = driver("b.yaml")
    assert second.wait(120) == 0 and first.wait(120) == 0, second.stderr.read() + first.stderr.read()
    (trained,) = root.glob("train-*")
    made_by = json.loads((trained / "hparams.json").read_text())["command"]
    assert "a.yaml" in made_by and "b.yaml" not in made_by
    assert len(list(root.glob("level-*/summary.json"))) == 1 and len(list(root.glob("prune-*/summary.json"))) == 1


def test_ray_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the ray extra were not installed
    with pytest.raises(TicketlabError, match=r"pip install 'ticketlab\[ray\]'"):
        run_study([Node("a", _ok, (tmp_path / "a",))], backend="ray")


def test_force_redoes_each_stage_of_a_study_once(tmp_path, capsys, monkeypatch):
    """--force redoes every stage of the preset, each once: not again as an input of each node that
    needs it, nor when the sections gather their results."""
    from ticketlab.store import Run

    preset = tmp_path / "lottery.yaml"
    preset.write_text(LOTTERY + "prune: {sparsity: 0.5}\nsweep: {ks: [0, 0.5]}\n")
    root = tmp_path / "runs"
    assert main(["run", str(preset), "--quiet", "--runs-dir", str(root)]) == 0
    started = []
    original = Run.start
    monkeypatch.setattr(Run, "start", lambda run, hparams: started.append(run.name) or original(run, hparams))
    assert main(["run", str(preset), "--quiet", "--force", "--runs-dir", str(root)]) == 0
    made = sorted(path.name for path in root.iterdir() if (path / "summary.json").exists())
    assert sorted(started) == made  # every run redone, each once (the lottery report too)


def test_status_of_a_running_study_estimates_what_is_left():
    from ticketlab.experiments.plan import describe_study

    nodes = [Node("dense", _ok, ("x",), trainings=1), Node("a", _ok, ("x",), ("dense",), trainings=2),
             Node("b", _ok, ("x",), ("dense",), trainings=2)]
    states = {"dense": "done", "a": "running", "b": "pending"}
    record = {"started": time.time() - 10, "updated": time.time(), "pid": os.getpid(), "states": states}
    lines, payload = describe_study("study", nodes, states, record)
    # 10 s for 1 training: the 4 left take about 40 s
    assert "; 10 s in, about 40 s left" in lines[1] and payload["to_run"]["trainings"] == 2  # b; a is running
    lines, _ = describe_study("study", nodes, {**states, "a": "done", "b": "done"}, record)
    assert "left" not in lines[1]


def _training_run(root, name, steps, epochs, finished=False):
    path = root / name
    path.mkdir(parents=True)
    (path / "hparams.json").write_text(json.dumps({"kind": "train", "train": {"steps": steps}}))
    rows = ["epoch,iteration,val_acc"] + [f"{e},{10 * e},{0.5 + e / 100}" for e in range(epochs + 1)]
    (path / "metrics.csv").write_text("\n".join(rows) + "\n")
    if finished:
        (path / "summary.json").write_text("{}")


def test_a_running_stage_shows_how_far_its_training_has_got(tmp_path):
    from ticketlab.experiments.board import stage_progress

    _training_run(tmp_path, "train-a", "4ep", 2)
    assert stage_progress(tmp_path, ["train-a"]) == "[######......] epoch 2 of 4, val acc 0.5200"
    _training_run(tmp_path, "train-b", "40it", 1)  # steps in iterations: 10 per epoch, so 4 epochs
    assert "epoch 1 of 4," in stage_progress(tmp_path, ["train-b"])
    _training_run(tmp_path, "level-1", "4ep", 4, finished=True)
    _training_run(tmp_path, "level-2", "4ep", 1)
    assert stage_progress(tmp_path, ["level-1", "level-2"]).startswith("[###.........] epoch 1 of 4")  # under way
    assert stage_progress(tmp_path, ["level-1"]) == ""  # finished
    assert stage_progress(tmp_path, ["search-x"]) == ""  # not begun, or records no progress as it goes


def test_the_board_redraws_beneath_the_notes_and_clears_itself(monkeypatch, capsys):
    import io

    from ticketlab.experiments import board as board_module

    monkeypatch.setattr(board_module, "REDRAW_SECONDS", 0.01)
    stream, lines = io.StringIO(), [["study: 0 done", "  train  a  1 s"]]
    with board_module.Board(lambda: lines[0], stream) as board:
        time.sleep(0.1)
        board.say("a failed: boom")
        lines[0] = ["study: 1 done"]
        time.sleep(0.1)
    out = stream.getvalue()
    assert "study: 0 done\n  train  a  1 s\n" in out and "\x1b[2F\x1b[J" in out  # drawn, then redrawn in place
    assert "ticketlab: note: a failed: boom" in capsys.readouterr().err
    assert out.endswith("study: 1 done\n\x1b[1F\x1b[J")  # gone at the end, for the study's last line


def test_two_workers_in_a_terminal_show_the_board_of_running_nodes(tmp_path, monkeypatch, capsys):
    from ticketlab.experiments import board as board_module

    monkeypatch.setattr(board_module, "REDRAW_SECONDS", 0.05)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    nodes = [Node(name, _sleep, (0.5,), kind="wait") for name in ("one", "two")]
    outcome = run_study(nodes, workers=2, runs_root=tmp_path)
    err = capsys.readouterr().err
    assert sorted(outcome.done) == ["one", "two"]
    assert re.search(r"  wait +\d+ s  one", err) and re.search(r"  wait +\d+ s  two", err)
    board_gone, last = err.splitlines()[-1].rsplit("\x1b[J", 1)  # the board erased, then the study's last line
    assert re.search(r"\x1b\[[123]F$", board_gone)  # up over the board as last drawn (1 to 3 lines)
    assert last.startswith("ticketlab: note: study: 2 done, 0 running, 0 failed")


def _sleep(seconds):
    time.sleep(seconds)


HELD_DRIVER = """\
import os, sys, time
from pathlib import Path
from ticketlab.experiments.study import Node, run_study

def hold(marker):
    marker.write_text(str(os.getpid()))
    time.sleep(120)

folder = Path(sys.argv[1])
run_study([Node(name, hold, (folder / name,)) for name in ("one", "two")], workers=2, progress=False)
"""


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="workers end with their driver through Linux's prctl")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_the_workers_end_at_once_with_their_driver_however_it_is_stopped(signum, tmp_path):
    """A signal to the driver alone, not its process group (a kill from another shell, a scheduler
    ending a job): its workers, busy with nodes that would run two more minutes, end with it
    instead of writing on into runs that the next study resumes."""
    driver = subprocess.Popen([sys.executable, "-c", HELD_DRIVER, str(tmp_path)], stderr=subprocess.PIPE, text=True)
    markers = [tmp_path / "one", tmp_path / "two"]
    deadline = time.time() + 60
    while time.time() < deadline and not all(m.exists() and m.read_text() for m in markers):
        time.sleep(0.05)
    workers = [int(m.read_text()) for m in markers]
    driver.send_signal(signum)
    stopped = time.time()
    _, err = driver.communicate(timeout=30)
    while time.time() < stopped + 10 and any(_alive(pid) for pid in workers):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)
    assert time.time() - stopped < 10
    if signum == signal.SIGINT:
        assert driver.returncode == -signal.SIGINT and err.rstrip().endswith("KeyboardInterrupt")
