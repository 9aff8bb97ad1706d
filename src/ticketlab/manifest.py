"""Each run's manifest: the SHA-256 of every file written into the run, checked when it is read.

Files written into a run directory while this process holds the run's lock (`writing`)
are recorded in its `manifest.json` as they replace their temporaries (`replace_recorded`,
called by store.atomic_path). Any read of a file inside a run (`verified_bytes`) checks it
against its recorded hash, so a flipped byte is a one-line error naming the file and the
command that made the run, which redoes it. A run made before manifests existed has none,
and its files are read unchecked.

manifest.json: {"files": {relative path: [accepted SHA-256, ...]}, "sha256": hash of "files"}.
A file's entry holds its one hash, except between the two manifest writes that bracket the
file's rename, when it accepts the old content and the new: a kill anywhere leaves a run
whose files all match.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ticketlab.config import TicketlabError, sha256_file

from ticketlab.paths import HPARAMS, MANIFEST

_writing: set[Path] = set()  # run directories whose lock this process holds
UMASK = os.umask(0)  # the process's umask, read once: files made by mkstemp get the mode others would
os.umask(UMASK)


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


@contextlib.contextmanager
def writing(root: Path) -> Iterator[None]:
    """Record what is written under `root` while the block runs (the caller holds its lock)."""
    root = _absolute(root)
    _writing.add(root)
    try:
        yield
    finally:
        _writing.discard(root)


def is_writing(root: Path) -> bool:
    """Whether this process holds the lock of the run at `root`."""
    return _absolute(root) in _writing


def writing_run(path: Path) -> Path | None:
    """The run directory being written by this process that `path` lies in, if any."""
    return next((parent for parent in _absolute(path).parents if parent in _writing), None)


def read_manifest(root: Path) -> dict[str, list[str]] | None:
    """The run's recorded hashes; None for a run without a manifest (made before there were any)."""
    path = root / MANIFEST
    try:
        saved = json.loads(path.read_bytes())
        files = saved["files"]
        intact = isinstance(files, dict) and saved["sha256"] == _sha256(_canonical(files))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        intact = False
    if not intact:
        raise TicketlabError(f"{path} is corrupt (it does not match its own checksum){repair_hint(root)}")
    return files


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(files: dict[str, list[str]]) -> bytes:
    return json.dumps(files, sort_keys=True, separators=(",", ":")).encode()


def _write_manifest(root: Path, files: dict[str, list[str]]) -> None:
    # Atomic as store.atomic_path is, but not through it: atomic_path records what it writes here.
    text = json.dumps({"files": files, "sha256": _sha256(_canonical(files))}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{MANIFEST}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, root / MANIFEST)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _relative(path: Path, root: Path) -> str:
    return _absolute(path).relative_to(root).as_posix()


def replace_recorded(tmp: Path, path: Path, root: Path) -> None:
    """Rename `tmp` to `path`, recording its hash in the manifest of `root` (a run this process writes)."""
    digest, name = sha256_file(tmp), _relative(path, root)
    files = read_manifest(root) or {}
    _write_manifest(root, {**files, name: [*files.get(name, [])[-1:], digest]})
    os.replace(tmp, path)
    _write_manifest(root, {**files, name: [digest]})


def remove_artifact(path: Path) -> None:
    """Delete a run's file (e.g. a resume point no longer needed) and its manifest entry."""
    path.unlink(missing_ok=True)
    root = writing_run(path)
    if root is not None:
        files = read_manifest(root) or {}
        if files.pop(_relative(path, root), None) is not None:
            _write_manifest(root, files)


def run_root(path: Path) -> Path | None:
    """The run directory a file lies in: the nearest of its parents with a manifest."""
    return next((parent for parent in list(_absolute(path).parents)[:3] if (parent / MANIFEST).exists()), None)


def recorded_command(root: Path) -> str | None:
    """The command line that made the run at `root`, as its hparams.json recorded it (if it did)."""
    try:
        command = json.loads((root / HPARAMS).read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        return None
    return command if isinstance(command, str) else None


def repair_hint(root: Path | None) -> str:
    """How to repair a damaged file of the run at `root`: the command that made the run (which
    redoes a damaged run), where it is known."""
    if root is None or not (root / HPARAMS).exists():
        return ""
    command = recorded_command(root)
    if command:
        return f"; repair it with `{command}` (a damaged run is redone)"
    return f"; run what made {root.name} again (a damaged run is redone), or --force it"


def problem(root: Path) -> str | None:
    """What is wrong with the run's files (one missing, or not matching its recorded hash), if anything."""
    try:
        files = read_manifest(_absolute(root))
    except TicketlabError:
        return f"{MANIFEST} is corrupt"
    for name, accepted in sorted((files or {}).items()):
        path = root / name
        if not path.exists():
            return f"{name} is missing"
        if sha256_file(path) not in accepted:
            return f"{name} is corrupt (its SHA-256 is not the one recorded when it was written)"
    return None


def verified_bytes(path: Path, what: str = "") -> bytes:
    """The file's content, checked against the hash its run recorded when it was written."""
    label = f"{what} {path}" if what else str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TicketlabError(f"{label} does not exist") from None
    except IsADirectoryError:
        raise TicketlabError(f"{label} is a directory; expected a file") from None
    root = run_root(path)
    if root is not None:
        accepted = (read_manifest(root) or {}).get(_relative(path, root))
        if accepted is not None and _sha256(data) not in accepted:
            raise TicketlabError(f"{label} is corrupt: its SHA-256 is not the one recorded when it was written"
                                 f"{repair_hint(root)}")
    return data
