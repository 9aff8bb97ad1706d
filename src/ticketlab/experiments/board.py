"""A study's progress in a terminal: its line, and beneath it a line per running node with how far
its stage has got, redrawn each second. How far a stage has got is read from its run directory
(a training's metrics.csv), so it works the same whichever process or machine runs the node, and
`ticketlab status` shows it for a study running elsewhere.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from ticketlab.config import TicketlabError
from ticketlab.paths import HPARAMS, METRICS, SUMMARY
from ticketlab.store import note
from ticketlab.training.steps import Step

REDRAW_SECONDS = 1.0
BAR_WIDTH = 12


def stage_progress(runs_root: Path, runs: Sequence[str]) -> str:
    """How far the first unfinished of a node's runs has got: a training's epoch (of its total, as a
    bar, where its hparams say) and latest validation accuracy; '' for a stage that records no
    progress as it goes (a search, a report) or one not begun."""
    unfinished = next((runs_root / name for name in runs if not (runs_root / name / SUMMARY).exists()), None)
    return "" if unfinished is None else _training_progress(unfinished)


def _training_progress(path: Path) -> str:
    # Read while the stage rewrites the files (atomically, by rename), for display only: plain reads,
    # not checked against the manifest, which is updated around each rename.
    try:
        rows = list(csv.DictReader((path / METRICS).read_text().splitlines()))
        steps = json.loads((path / HPARAMS).read_text()).get("train", {}).get("steps")
    except (OSError, ValueError):
        return ""
    if not rows:
        return ""
    last = rows[-1]
    epoch, accuracy = float(last["epoch"]), float(last["val_acc"])
    done = f"epoch {epoch:g}, val acc {accuracy:.4f}"
    per_epoch = next((int(r["iteration"]) / float(r["epoch"]) for r in rows if float(r["epoch"]) > 0), None)
    if not isinstance(steps, str) or per_epoch is None:
        return done
    try:
        total = Step.parse(steps).to_iterations(round(per_epoch)) / per_epoch
    except TicketlabError:
        return done
    filled = round(BAR_WIDTH * min(epoch / total, 1.0)) if total else BAR_WIDTH
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] epoch {epoch:g} of {total:g}, val acc {accuracy:.4f}"


class Board:
    """Redraws `lines()` beneath what was printed before, each second, on a terminal; `say` prints a
    note above it. Used as a context manager around the study; on leaving, the board is cleared."""

    def __init__(self, lines: Callable[[], list[str]], stream: TextIO | None = None):
        self.lines, self.stream = lines, stream or sys.stderr
        self._shown = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Board:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._clear()
            self.stream.flush()

    def say(self, message: str) -> None:
        """A note (store.note) above the board."""
        with self._lock:
            self._clear()
            self.stream.flush()
            note(message)
            self._draw()

    def _loop(self) -> None:
        while not self._stop.wait(REDRAW_SECONDS):
            with self._lock:
                self._clear()
                self._draw()

    def _clear(self) -> None:
        if self._shown:
            self.stream.write(f"\x1b[{self._shown}F\x1b[J")  # up to the board's first line, then erase below
            self._shown = 0

    def _draw(self) -> None:
        width = max(shutil.get_terminal_size().columns - 1, 20)  # a wrapped line would break the count
        lines = [line[:width] for line in self.lines()]
        self.stream.write("".join(line + "\n" for line in lines))
        self.stream.flush()
        self._shown = len(lines)

