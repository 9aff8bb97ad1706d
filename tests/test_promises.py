"""The README's promises, tried as a hostile user would: one-line errors for bad input,
damaged artifacts detected and repaired, full and read-only disks, divergence, logs.

Every bad input must exit 2 with one line on stderr (`ticketlab: error: ...`), no
traceback, and no run directory created.
"""

import contextlib
import json
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ticketlab.cli import main

TRAIN = ["train", "--epochs", "2", "--save-at", "0it,1ep", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs directory with a finished training run (train-…) and a structured prune of it."""
    root = tmp_path_factory.mktemp("promises")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TICKETLAB_RUNS", str(root))
        assert main(TRAIN) == 0
        trained = next(root.glob("train-*")).name
        assert main(["prune", "--run", trained, "--structured", "--criterion", "l1_norm", "--sparsity", "0.5",
                     "--quiet"]) == 0
    return root


def trained_name(root: Path, model: str = "lenet300_100") -> str:
    """The finished training run of `model` under root."""
    return next(p.name for p in sorted(root.glob("train-*")) if (p / "summary.json").exists()
                and json.loads((p / "hparams.json").read_text())["model"]["name"] == model)


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("ticketlab: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def write_yaml(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD = [
    # wrong types
    "train --lr abc", "train --batch-size x", "train --threads x", "train --epochs x", "prune --run T --sparsity abc",
    "search anneal --run T --budget ten", "lottery --target-sparsity x", "earlybird --ratios abc",
    "search anneal --run T --val-sizes a,b", "train --augment maybe",
    # non-finite and out-of-range numbers
    "train --lr nan", "train --lr inf", "train --lr -1", "train --lr 0", "train --optimizer sgd --momentum nan",
    "train --optimizer sgd --momentum 1.5", "train --weight-decay -1", "train --l1 -0.1", "train --gamma 0",
    "train --batch-size 0", "train --threads 0", "train --epochs 0", "train --val-size -5", "train --train-size 0",
    "prune --run T --sparsity 1.5", "prune --run T --sparsity nan", "prune --run T --output-sparsity 2",
    "search anneal --run T --sparsity 0", "search anneal --run T --budget 0", "search anneal --run T --val-size 99999",
    "search reinforce --run T --policy-lr -1", "lottery --levels 0", "lottery --rate 1.5", "lottery --replicates 0",
    "earlybird --ratios 1.5", "earlybird --threshold nan", "sweep --run T --ks 1.5",
    # unknown names
    "nope", "train --model nope", "train --dataset nope", "train --optimizer nope", "train --schedule nope",
    "train --init nope", "train --device tpu", "train --select-by nope", "prune --run T --criterion nope",
    "prune --run T --scope nope", "search nope --run T", "search anneal --run T --granularity nope",
    "search anneal --run T --metric nope", "lottery --controls nope", "run nope", "train --bogus 1",
    # bad steps and combinations
    "train --steps banana", "train --save-at 99ep", "train --epochs 2 --steps 3ep", "prune --run T --at 1ep9it",
    "prune --run T --at 99ep", "prune --run T --structured --criterion magnitude", "train --nesterov",
    "train --schedule multistep", "train --schedule multistep --milestones 99ep", "train --warmup 99ep",
    "train --eval-every 0it", "prune --run T --criterion snip --score-batches 0",
    "lottery --controls reinit --control-levels x",
    # bad paths and runs
    "prune --run nope", "prune --run /nonexistent/run", "shrink --run T", "train --data-dir /nonexistent --dataset mnist",
    "runs --runs-dir FILE", "train --runs-dir FILE/sub",
    # malformed and hostile YAML
    "run YAML:evil.yaml", "run YAML:unclosed.yaml", "run YAML:list.yaml", "run YAML:unknown.yaml",
    "run YAML:badvalue.yaml", "run YAML:missing.yaml", "run YAML:binary.yaml",
    "run YAML:late.yaml",  # its prune section is bad: nothing may train before that is found
    "run YAML:late.yaml --plan", "status YAML:late.yaml", "status nope", "status YAML:badsection.yaml",
    "run YAML:controls.yaml", "run YAML:ks.yaml", "run YAML:sparsities.yaml",
    # studies: workers, backends, clusters
    "run YAML:unknown.yaml --workers 64 --plan", "run --workers 0", "run --backend dask", "run --address auto",
    "run --backend ray --workers 2", "run --backend ray --address auto", "status YAML:late.yaml --runs-dir FILE",
    # a mask from another model
    "search anneal --run T --sparsity 0.5 --start OTHER_PRUNE",
]
YAMLS = {
    "evil.yaml": "!!python/object/apply:os.system ['touch PWNED']\n",
    "unclosed.yaml": "train: {lr: [1, 2\n",
    "list.yaml": "- 1\n- 2\n",
    "unknown.yaml": "train: {steps: 1ep, colour: red}\n",
    "badvalue.yaml": "train: {steps: 1ep, lr: .nan}\n",
    "late.yaml": "description: trains, then prunes at an impossible sparsity\ntrain: {steps: 1ep}\nprune: {sparsity: 2}\n",
    "badsection.yaml": "train: {steps: 1ep}\nsweeps: {ks: [0.5]}\n",
    "controls.yaml": "train: {steps: 1ep}\ncontrols: [reinit]\n",  # controls of no lottery
    "ks.yaml": "train: {steps: 1ep}\nsweep: {ks: 0.5}\n",
    "sparsities.yaml": "train: {steps: 1ep}\ncompare: {methods: [{name: m, prune: {}}], sparsities: [abc]}\n",
}


@pytest.fixture(scope="module")
def other_prune(runs):
    """A prune run of another model (conv2 on digits), whose mask fits no LeNet."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TICKETLAB_RUNS", str(runs))
        assert main(["train", "--model", "conv2", "--dataset", "digits", "--steps", "20it", "--quiet"]) == 0
        other = trained_name(runs, "conv2")
        assert main(["prune", "--run", other, "--sparsity", "0.5", "--quiet"]) == 0
    return next(p.name for p in runs.glob("prune-*") if json.loads((p / "hparams.json").read_text())["train"] == other)


def test_the_battery_has_at_least_40_cases():
    assert len(BAD) >= 40


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_creates_no_run(case, runs, other_prune, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TICKETLAB_RUNS", str(runs))
    monkeypatch.chdir(tmp_path)
    for name, text in YAMLS.items():
        write_yaml(tmp_path, name, text)
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00 not text")
    (tmp_path / "FILE").write_text("not a directory")
    words = [word.replace("YAML:", str(tmp_path) + "/").replace("FILE", str(tmp_path / "FILE"))
             for word in shlex.split(case)]
    words = [trained_name(runs) if w == "T" else other_prune if w == "OTHER_PRUNE" else w for w in words]
    before = sorted(p.name for p in runs.iterdir())
    assert main(words) == 2
    one_line_error(capsys)
    assert sorted(p.name for p in runs.iterdir()) == before
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "runs").exists()


def test_a_raw_pickle_checkpoint_is_refused_without_a_warning(tmp_path):
    import torch

    from ticketlab.config import TicketlabError
    from ticketlab.store import load_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "call": print}, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TicketlabError, match="corrupt or unreadable"):
            load_checkpoint(path)
    assert caught == []


def flip_middle(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def test_a_flipped_checkpoint_is_caught_named_with_its_repair_and_repaired_by_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TICKETLAB_RUNS", str(tmp_path))
    assert main(TRAIN) == 0
    run = trained_name(tmp_path)
    intact = (tmp_path / run / "checkpoints" / "0it.pt").read_bytes()
    flip_middle(tmp_path / run / "checkpoints" / "0it.pt")
    capsys.readouterr()
    assert main(["prune", "--run", run, "--at", "0it", "--quiet"]) == 2
    message = one_line_error(capsys)
    assert "checkpoints/0it.pt is corrupt" in message and f"`ticketlab {shlex.join(TRAIN)}`" in message
    assert not list(tmp_path.glob("prune-*"))
    # The command the error names redoes the run, and says so; training is deterministic on CPU.
    assert main(TRAIN) == 0
    assert "redoing the run" in capsys.readouterr().err
    assert (tmp_path / run / "checkpoints" / "0it.pt").read_bytes() == intact
    assert main(["prune", "--run", run, "--at", "0it", "--quiet"]) == 0


def test_a_deleted_checkpoint_of_a_finished_run_is_regenerated(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TICKETLAB_RUNS", str(tmp_path))
    assert main(TRAIN) == 0
    run = trained_name(tmp_path)
    (tmp_path / run / "checkpoints" / "1ep.pt").unlink()
    assert main(["prune", "--run", run, "--at", "1ep", "--quiet"]) == 2
    assert "1ep.pt is missing" in one_line_error(capsys)
    assert main(TRAIN) == 0
    assert (tmp_path / run / "checkpoints" / "1ep.pt").exists()
    assert main(["prune", "--run", run, "--at", "1ep", "--quiet"]) == 0


@pytest.mark.parametrize("artifact", ["mask.safetensors", "summary.json", "manifest.json"])
def test_flipped_bytes_in_a_prune_runs_artifacts_are_detected(artifact, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TICKETLAB_RUNS", str(tmp_path))
    assert main(TRAIN) == 0
    prune = ["prune", "--run", trained_name(tmp_path), "--structured", "--criterion", "l1_norm", "--sparsity", "0.5",
             "--quiet"]
    assert main(prune) == 0
    pruned = next(tmp_path.glob("prune-*"))
    flip_middle(pruned / artifact, 8)
    capsys.readouterr()
    # Reading it from another run stops with one line naming it ...
    assert main(["shrink", "--run", pruned.name, "--quiet"]) == 2
    assert artifact in one_line_error(capsys)
    # ... `ticketlab runs` still lists every run ...
    assert main(["runs"]) == 0
    assert pruned.name in capsys.readouterr().out
    # ... and the prune command redoes the run, after which it is read again.
    assert main(prune) == 0
    assert "redoing the run" in capsys.readouterr().err
    assert main(["shrink", "--run", pruned.name, "--quiet"]) == 0


def test_flipped_summary_is_listed_as_corrupt_and_the_other_runs_still_listed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TICKETLAB_RUNS", str(tmp_path))
    assert main(TRAIN) == 0
    assert main(["train", "--epochs", "1", "--quiet"]) == 0
    damaged, other = sorted(tmp_path.glob("train-*"))
    (damaged / "summary.json").write_text("{not json")
    capsys.readouterr()
    assert main(["runs", "--json"]) == 0
    listed = {row["name"]: row["status"] for row in json.loads(capsys.readouterr().out.splitlines()[-1])["runs"]}
    assert listed == {damaged.name: "corrupt", other.name: "done"}


def interrupted_run(root: Path):
    """A run killed mid-write: one artifact written, a temporary left behind, no summary."""
    from ticketlab.store import Run, atomic_torch_save

    run = Run("demo", {"n": 1}, root)
    with run.lock():
        run.start({})
        atomic_torch_save({"step": 1}, run.file("resume.pt"))
    (run.path / "checkpoints").mkdir()
    (run.path / "checkpoints" / ".final.pt.abc123.tmp").write_bytes(b"half written")
    return run


def test_an_interrupted_run_loses_its_stale_temporaries_and_keeps_what_it_resumes_from(tmp_path, capsys):
    run = interrupted_run(tmp_path)
    with run.lock():
        assert run.claim(force=False)
    assert not list(run.path.rglob("*.tmp")) and run.file("resume.pt").exists()
    assert capsys.readouterr().err == ""


def test_an_interrupted_run_with_a_damaged_resume_point_starts_over(tmp_path, capsys):
    run = interrupted_run(tmp_path)
    flip_middle(run.file("resume.pt"), 4)
    with run.lock():
        assert run.claim(force=False)
    assert not run.file("resume.pt").exists()
    err = capsys.readouterr().err
    assert "resume.pt is corrupt" in err and "starting it over" in err


def test_divergence_stops_names_the_step_is_recorded_and_never_cached_as_done(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TICKETLAB_RUNS", str(tmp_path))
    diverging = ["train", "--optimizer", "sgd", "--lr", "1e4", "--epochs", "2", "--quiet"]
    assert main(diverging) == 2
    message = one_line_error(capsys)
    assert "training diverged at " in message and "lower --lr" in message
    run = next(tmp_path.glob("train-*"))
    assert not (run / "summary.json").exists() and (run / "diverged.json").exists()
    assert main(diverging) == 2
    assert "diverged earlier" in one_line_error(capsys)
    assert main(["runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["runs"][0]["status"] == "diverged"
    assert main([*diverging, "--force"]) == 2  # tried again, and diverges again
    assert "diverged earlier" not in one_line_error(capsys)


def test_progress_written_to_a_pipe_is_a_few_lines_without_carriage_returns(tmp_path):
    env = {**os.environ, "TICKETLAB_RUNS": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "ticketlab.cli", "train", "--epochs", "2"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert 1 <= len(lines) <= 4 and lines[-1].endswith(")") and "100%" in lines[-1], lines


# --- full and read-only disks ---------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A small filesystem of its own at `path` (needs root, as CI has)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def intact_files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_is_one_line_keeps_what_was_written_and_the_rerun_completes(tmp_path, monkeypatch, capsys):
    with tmpfs(tmp_path / "disk", "12m") as disk:
        monkeypatch.setenv("TICKETLAB_RUNS", str(disk / "runs"))
        filler = disk / "filler"
        filler.write_bytes(bytes(7_000_000))
        command = ["train", "--epochs", "3", "--save-at", "0it,1ep,2ep", "--quiet"]
        assert main(command) == 2
        assert "the disk is full" in one_line_error(capsys)
        run = next((disk / "runs").glob("train-*"))
        written = intact_files(run)
        assert "checkpoints/0it.pt" in written and not any(name.endswith(".tmp") for name in written)
        filler.unlink()
        assert main(command) == 0
        assert (run / "summary.json").exists() and (run / "checkpoints" / "0it.pt").read_bytes() == \
            written["checkpoints/0it.pt"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_read_only_runs_dir_lists_and_reuses_runs_and_refuses_new_ones_in_one_line(tmp_path, monkeypatch, capsys):
    with tmpfs(tmp_path / "disk", "16m") as disk:
        monkeypatch.setenv("TICKETLAB_RUNS", str(disk / "runs"))
        assert main(TRAIN) == 0
        run = next((disk / "runs").glob("train-*"))
        before = intact_files(run)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        capsys.readouterr()
        assert main(["runs"]) == 0
        assert run.name in capsys.readouterr().out
        assert main(TRAIN) == 0  # finished: returned as it is
        assert "finished earlier" in capsys.readouterr().out
        assert main(["train", "--epochs", "1", "--quiet"]) == 2
        assert "cannot write" in one_line_error(capsys)
        assert main(["prune", "--run", run.name, "--quiet"]) == 2
        one_line_error(capsys)
        assert intact_files(run) == before


def test_a_checkpoint_of_another_network_in_a_run_without_manifest_is_refused_in_one_line(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TICKETLAB_RUNS", str(tmp_path))
    assert main(TRAIN) == 0
    assert main(["train", "--model", "conv2", "--dataset", "digits", "--steps", "20it", "--quiet"]) == 0
    lenet, conv2 = trained_name(tmp_path), trained_name(tmp_path, "conv2")
    (tmp_path / lenet / "manifest.json").unlink()  # as runs made before manifests existed
    (tmp_path / lenet / "checkpoints" / "0it.pt").write_bytes((tmp_path / conv2 / "checkpoints" / "final.pt").read_bytes())
    capsys.readouterr()
    for command in (["prune", "--run", lenet, "--at", "0it"], ["sweep", "--run", lenet, "--step", "0it"]):
        assert main([*command, "--quiet"]) == 2
        message = one_line_error(capsys)
        assert "0it.pt holds weights of another network" in message and "--force" in message
    assert not list(tmp_path.glob("prune-*")) and not list(tmp_path.glob("sweep-*"))


def test_a_flipped_csv_that_a_finished_run_is_read_back_from_is_detected(tmp_path, monkeypatch, capsys):
    from ticketlab.analysis.sweep import sweep
    from ticketlab.config import Runtime, TicketlabError
    from ticketlab.store import read_csv
    from ticketlab.training.stage import find_train_run

    monkeypatch.setenv("TICKETLAB_RUNS", str(tmp_path))
    assert main(TRAIN) == 0
    trained = find_train_run(trained_name(tmp_path))
    done = sweep(trained, ["0", "0.5"], runtime=Runtime(progress=False))
    flip_middle(done.path / "sweep.csv", 4)
    with pytest.raises(TicketlabError, match="sweep.csv is corrupt"):
        read_csv(done.path / "sweep.csv")
    again = sweep(trained, ["0", "0.5"], runtime=Runtime(progress=False))  # redone, and says so
    assert "redoing the run" in capsys.readouterr().err and again.rows == done.rows


def test_a_forced_run_killed_while_it_is_cleared_starts_over(tmp_path, capsys):
    from ticketlab.store import Run, atomic_write_text

    run = Run("demo", {"n": 2}, tmp_path)
    with run.lock():
        run.start({})
        atomic_write_text(run.file("a.txt"), "a")
        run.finish({})
    # What clear() leaves when killed after the summary and one file went: the manifest names both.
    run.file("summary.json").unlink()
    run.file("a.txt").unlink()
    assert not run.done and run.problem() == "a.txt is missing"
    with run.lock():
        assert run.claim(force=False)
    assert "starting it over" in capsys.readouterr().err and not run.file("manifest.json").exists()
