"""Where results live: one directory per stage run, named by a hash of what defines it.

A run directory is `<root>/<kind>-<hash>/`. It holds `hparams.json` (what defines it),
the stage's artifacts, and `summary.json`, written last: its presence means "done".
Every file is written atomically (temp file in the same directory, then rename), and a
run is locked while a process works on it, so two processes never write one run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ticketlab.config import TicketlabError, stable_hash

SUMMARY = "summary.json"
HPARAMS = "hparams.json"
LOCK = ".lock"
_UMASK = os.umask(0)
os.umask(_UMASK)


def runs_root(runs_dir: str | Path | None = None) -> Path:
    """The root of all runs: the argument, else $TICKETLAB_RUNS, else ./runs."""
    return Path(runs_dir or os.environ.get("TICKETLAB_RUNS") or "runs")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; artifacts should be as readable as any
    try:
        yield Path(tmp)
        os.replace(tmp, path)
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


def atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only: no code runs); a damaged file is a clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TicketlabError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises many types for a damaged file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TicketlabError(
            f"checkpoint {path} is corrupt or unreadable ({reason}); delete it or rerun with --force"
        ) from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TicketlabError(f"{path} is unreadable ({exc}); delete it or rerun with --force") from None


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

    def summary(self) -> dict[str, Any]:
        return read_json(self.path / SUMMARY)

    def file(self, name: str) -> Path:
        return self.path / name

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock; a second process gets a clear error instead of a corrupt run."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise TicketlabError(
                    f"run {self.path} is being written by another process (pid {holder}); "
                    "wait for it to finish or stop it"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)

    def claim(self, force: bool) -> bool:
        """Whether to (re)do the run, asked while holding its lock: not when it is finished (another
        process may have finished it while we waited) unless forced; a forced run is cleared first."""
        if self.done and not force:
            return False
        if force:
            self.clear()
        return True

    def clear(self) -> None:
        """Remove every artifact (for --force); call while holding the lock."""
        for child in self.path.iterdir():
            if child.name == LOCK:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def start(self, hparams: dict[str, Any]) -> None:
        atomic_write_json(self.path / HPARAMS, {"kind": self.kind, "identity": self.identity, **hparams})

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


def check_found(found: StageRun, path: Path) -> None:
    """A run found by name must be the one its hparams name, and finished; then its summary is read."""
    if found.run.path.resolve() != path.resolve():
        raise TicketlabError(f"{path} does not match its hparams.json (renamed or edited?); rerun it")
    if not found.run.done:
        raise TicketlabError(f"run {found.run.name} has not finished; run its command again to resume it")
    found.summary = found.run.summary()


@dataclass
class StageRun:
    """What a stage returns: its run directory, the run's summary, and whether the run had
    finished before this call (`cached`). Stages add their inputs as fields."""

    run: Run
    summary: dict[str, Any] = field(default_factory=dict, kw_only=True)
    cached: bool = field(default=False, kw_only=True)
    checkpoint_hint: ClassVar[str] = ""  # how to keep more checkpoints, for the missing-checkpoint error

    @property
    def path(self) -> Path:
        return self.run.path

    def state_dict(self, step: str = "final") -> dict[str, torch.Tensor]:
        """The weights saved as checkpoints/<step>.pt."""
        path = self.run.file(f"checkpoints/{step}.pt")
        if not path.exists():
            saved = sorted(p.stem for p in self.run.file("checkpoints").glob("*.pt"))
            raise TicketlabError(f"run {self.run.name} has no checkpoint {step!r}; saved: {', '.join(saved)}"
                                 f"{self.checkpoint_hint}")
        return load_checkpoint(path)["model"]


def is_locked(path: Path) -> bool:
    """Whether some process holds the run's lock right now."""
    lock_file = path / LOCK
    if not lock_file.exists():
        return False
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def list_runs(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every run under the root with its status (done, running, interrupted) and summary."""
    rows = []
    base = runs_root(root)
    if not base.is_dir():
        return rows
    for path in sorted(base.iterdir()):
        if not (path / HPARAMS).exists():
            continue
        hparams = read_json(path / HPARAMS)
        if (path / SUMMARY).exists():
            status, summary = "done", read_json(path / SUMMARY)
        else:
            status, summary = ("running" if is_locked(path) else "interrupted"), {}
        rows.append({"name": path.name, "path": str(path), "kind": hparams.get("kind"),
                     "status": status, "hparams": hparams, "summary": summary})
    return rows
