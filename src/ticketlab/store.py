"""Where results live: one directory per stage run, named by a hash of what defines it.

A run directory is `<root>/<kind>-<hash>/`. It holds `hparams.json` (what defines it),
the stage's artifacts, and `summary.json`, written last: its presence means "done".
Every file is written atomically (temp file in the same directory, then rename), and a
run is locked while a process works on it, so two processes never write one run.

Every file written into a run while its lock is held gets its SHA-256 recorded in the
run's manifest (manifest.py), and every read of a run's file checks it. A finished run
with a missing or damaged file is redone by the stage that made it the next time it is
asked for (`Run.claim`); an unfinished one with a damaged file starts over instead of
resuming from it.

What each kind of run is (its name's kind, its files, how it is described) is declared by
its class in stage.py; `Run.produce` is the protocol they all make their runs by.
"""

from __future__ import annotations

import contextlib
import csv
import io
import fcntl
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from ticketlab.config import TicketlabError, stable_hash
from ticketlab.manifest import (UMASK, is_writing, problem as manifest_problem, repair_hint, replace_recorded, run_root,
                                verified_bytes, writing, writing_run)
from ticketlab.paths import DIVERGED, HPARAMS, LOCK, MANIFEST, SUMMARY, TEMPORARY

P = TypeVar("P")  # what a stage prepares before it writes
# The command line that is running, recorded in each run's hparams.json as the way to redo it.
_invocation: list[str | None] = [None]


def set_invocation(command: str | None) -> None:
    """Record `command` (e.g. `ticketlab train --epochs 3`) as the command that makes the runs this
    process writes; a damaged artifact's error names it as the repair."""
    _invocation[0] = command


def note(message: str) -> None:
    """Tell the user something the program did on its own (e.g. redoing a damaged run), on stderr."""
    print(f"ticketlab: note: {message}", file=sys.stderr)


def runs_root(runs_dir: str | Path | None = None) -> Path:
    """The root of all runs: the argument, else $TICKETLAB_RUNS, else ./runs."""
    return Path(runs_dir or os.environ.get("TICKETLAB_RUNS") or "runs")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; artifacts should be as readable as any
    try:
        try:
            yield Path(tmp)
        except OSError as exc:  # a full disk: name the artifact, not the temporary
            exc.filename = str(path)
            raise
        root = writing_run(path)
        if root is None:
            os.replace(tmp, path)
        else:
            replace_recorded(Path(tmp), path, root)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV text with a header, in the given column order."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header (checked against its run's manifest), as text."""
    return list(csv.DictReader(io.StringIO(verified_bytes(path).decode(errors="replace"), newline="")))


def atomic_torch_save(obj: Any, path: Path) -> None:
    # Serialised in memory first: torch's own file writer reports a full disk as a RuntimeError
    # ("unexpected pos"), a plain write as the OSError it is (ENOSPC).
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only: no code runs); a damaged file is a clear error."""
    data = verified_bytes(path, "checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about what it then refuses; the error says it in one line
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise TicketlabError(f"checkpoint {path} is corrupt or unreadable ({reason[:160]})"
                             f"{repair_hint(run_root(path) or path.parent)}") from None
    if not isinstance(state, dict):
        raise TicketlabError(f"checkpoint {path} holds a {type(state).__name__}; expected a ticketlab checkpoint")
    return state


def read_json(path: Path) -> Any:
    data = verified_bytes(path)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise TicketlabError(f"{path} is not valid JSON ({exc}){repair_hint(run_root(path) or path.parent)}") \
            from None


class Run:
    """One stage's run directory, named by the stable hash of its identity."""

    def __init__(self, kind: str, identity: dict[str, Any], root: str | Path | None = None):
        self.kind = kind
        self.identity = identity
        self.name = f"{kind}-{stable_hash({'kind': kind, **identity})}"
        self.path = runs_root(root) / self.name

    @property
    def done(self) -> bool:
        return (self.path / SUMMARY).exists()

    def reusable(self, force: bool) -> bool:
        """Whether the finished run can be returned as it is: not forced, and every file intact."""
        return self.done and not force and self.problem() is None

    def problem(self) -> str | None:
        """What is wrong with the run's files (one missing, or not matching its recorded hash), if anything."""
        return manifest_problem(self.path)

    def summary(self) -> dict[str, Any]:
        return read_json(self.path / SUMMARY)

    def file(self, name: str) -> Path:
        return self.path / name

    @contextlib.contextmanager
    def lock(self, wait: bool = False) -> Iterator[None]:
        """Hold the run's lock, so that two processes never write one run. When another process
        holds it, wait for it to let go (`wait`; a stage then finds the run finished), or stop
        with a clear error."""
        if is_writing(self.path):
            raise TicketlabError(f"run {self.name} is already being written by this process")
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                if not wait:
                    raise TicketlabError(f"run {self.path} is being written by another process (pid {holder}); "
                                         "wait for it to finish or stop it") from None
                note(f"run {self.name} is being written by another process (pid {holder}); waiting for it")
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                with writing(self.path):
                    yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)

    def claim(self, force: bool) -> bool:
        """Whether to (re)do the run, asked while holding its lock: not when it is finished and intact
        (another process may have finished it while we waited) unless forced. A forced run, and one
        with a missing or damaged file, is cleared first; an interrupted one keeps what it has to
        resume from, less the temporaries a kill left behind."""
        problem = None if force else self.problem()
        if self.done and not force and problem is None:
            return False
        if problem is not None:
            note(f"run {self.name}: {problem}; " + ("redoing the run" if self.done else "starting it over"))
        if force or problem is not None:
            self.clear()
        else:
            for stale in self.path.rglob(TEMPORARY):
                stale.unlink(missing_ok=True)
        return True

    def clear(self) -> None:
        """Remove every artifact (for --force); call while holding the lock. The summary goes first
        and the manifest last, so that a kill part-way leaves an unfinished run whose manifest
        still names what is gone: it starts over."""
        (self.path / SUMMARY).unlink(missing_ok=True)
        for child in sorted(self.path.iterdir(), key=lambda p: p.name == MANIFEST):
            if child.name == LOCK:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def produce(self, force: bool, prepare: Callable[[], tuple[dict[str, Any], P]],
                write: Callable[[P], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """The stage protocol, once: the run's summary, and whether it had finished before (cached).

        A finished, intact run is returned as it is. Otherwise `prepare()` does everything that
        writes nothing — every check of the inputs, and the work that can fail on them, so that
        bad input leaves no run directory — and returns the run's hparams and what `write`
        needs. Then, holding the run's lock, the run is claimed (cleared if forced or damaged;
        or found finished by another process meanwhile), started with those hparams, `write`
        writes the artifacts and returns the summary, and the summary marks the run done.
        """
        if self.reusable(force):
            return self.summary(), True
        hparams, prepared = prepare()
        with self.lock(wait=True):  # a study overlapping another one's waits for the shared run
            if not self.claim(force):  # another process finished it while this one prepared or waited
                return self.summary(), True
            self.start(hparams)
            summary = write(prepared)
            self.finish(summary)
        return summary, False

    def start(self, hparams: dict[str, Any]) -> None:
        command = {"command": _invocation[0]} if _invocation[0] else {}
        atomic_write_json(self.path / HPARAMS, {"kind": self.kind, "identity": self.identity, **hparams, **command})

    def finish(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / SUMMARY, summary)


def find_run(ref: str, kinds: Sequence[str], runs_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """A run's directory and hparams.json, by its directory or its name (`train-3fc3da0406aa`),
    checked to be of one of `kinds`."""
    path = Path(ref)
    if not (path / HPARAMS).exists():
        path = runs_root(runs_dir) / ref
    if not (path / HPARAMS).exists():
        raise TicketlabError(f"no run {ref!r}: expected a run directory or a name listed by `ticketlab runs`")
    hparams = read_json(path / HPARAMS)
    if hparams.get("kind") not in kinds:
        raise TicketlabError(f"{ref} is a {hparams.get('kind')} run; expected a {' or '.join(kinds)} run")
    return path, hparams


def is_locked(path: Path) -> bool:
    """Whether some process holds the run's lock right now."""
    lock_file = path / LOCK
    if not lock_file.exists():
        return False
    with open(lock_file, "r") as handle:  # read-only: listing runs must work on a read-only runs dir
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def check_runs_root(root: str | Path | None = None) -> Path:
    """The runs root, which must be a directory where it exists."""
    base = runs_root(root)
    if base.exists() and not base.is_dir():
        raise TicketlabError(f"runs directory {base} is a file; expected a directory (--runs-dir or $TICKETLAB_RUNS)")
    return base


def run_status(path: Path) -> str:
    """running (its lock is held), done, diverged, interrupted (begun, neither) or absent."""
    if is_locked(path):
        return "running"
    if (path / SUMMARY).exists():
        return "done"
    if (path / DIVERGED).exists():
        return "diverged"
    return "interrupted" if (path / HPARAMS).exists() else "absent"


def list_runs(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every run under the root with its status (done, running, interrupted) and summary."""
    rows: list[dict[str, Any]] = []
    base = check_runs_root(root)
    if not base.is_dir():
        return rows
    for path in sorted(base.iterdir()):
        if not (path / HPARAMS).exists():
            continue
        hparams: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        try:  # one damaged run is listed as such; it does not hide the others
            hparams = read_json(path / HPARAMS)
            status = run_status(path)
            if status in ("done", "diverged"):
                summary = read_json(path / (SUMMARY if status == "done" else DIVERGED))
        except (TicketlabError, OSError):
            status = "corrupt"
        if not isinstance(hparams, dict) or not isinstance(summary, dict):
            status, hparams, summary = "corrupt", {}, {}
        rows.append({"name": path.name, "path": str(path), "kind": hparams.get("kind", path.name.rpartition("-")[0]),
                     "status": status, "hparams": hparams, "summary": summary})
    return rows
