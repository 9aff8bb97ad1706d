import os
import subprocess
import sys

import pytest
import torch

from ticketlab.config import TicketlabError
from ticketlab.store import Run, atomic_torch_save, atomic_write_text, list_runs, load_checkpoint


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "old")

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"x": Unsaveable()}, tmp_path / "metrics.csv")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temp file left behind


def test_checkpoints_load_without_running_code_and_corruption_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"model": {"w": torch.ones(2)}}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(TicketlabError, match=r"ckpt.pt is corrupt or unreadable"):
        load_checkpoint(path)


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": os.getcwd, "x": print}, path)  # pickles references to functions
    with pytest.raises(TicketlabError, match="corrupt or unreadable"):
        load_checkpoint(path)


def test_a_second_lock_in_the_same_process_is_a_clear_error_not_a_deadlock(tmp_path):
    run = Run("train", {"x": 1}, tmp_path)
    with run.lock():
        with pytest.raises(TicketlabError, match="already being written by this process"):
            with run.lock(wait=True):
                pass
    with run.lock():  # released: free again
        pass


@pytest.mark.parametrize("holder_finishes", [True, False])
def test_a_stage_asked_for_while_another_process_writes_it_waits_and_computes_it_once(holder_finishes, tmp_path,
                                                                                      capsys):
    run = Run("train", {"x": 3}, tmp_path)
    run.path.mkdir(parents=True)
    finish = f"open(sys.argv[2], 'w').write('{{}}'); " if holder_finishes else ""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl,sys,time; f=open(sys.argv[1],'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); f.flush(); "
         f"print('held', flush=True); time.sleep(1.5); {finish}fcntl.flock(f, fcntl.LOCK_UN)",
         str(run.path / ".lock"), str(run.path / "summary.json")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        written = []
        summary, cached = run.produce(False, lambda: ({}, "prepared"), lambda p: written.append(p) or {"mine": 1})
    finally:
        holder.wait()
    assert "waiting for it" in capsys.readouterr().err
    assert (cached, written, summary) == ((True, [], {}) if holder_finishes else (False, ["prepared"], {"mine": 1}))


def test_lock_held_by_another_process_and_listing_shows_it(tmp_path):
    run = Run("train", {"x": 2}, tmp_path)
    run.path.mkdir(parents=True)
    run.start({})
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl,sys,time; f=open(sys.argv[1],'a+'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); "
         "time.sleep(30)", str(run.path / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert [r["status"] for r in list_runs(tmp_path)] == ["running"]
        with pytest.raises(TicketlabError, match="another process"):
            with run.lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    assert [r["status"] for r in list_runs(tmp_path)] == ["interrupted"]
    run.finish({"ok": True})
    assert [(r["status"], r["summary"]) for r in list_runs(tmp_path)] == [("done", {"ok": True})]
