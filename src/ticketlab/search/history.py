"""A search's history: one row per evaluation, as CSV, and the thesis's figure of it.

Columns: step (evaluations so far), temperature and h (the move's size) of the step,
candidate (the evaluated mask's score), current (the current mask's score after the
decision), mean (thesis mode: the running mean of accepted scores), best (the best score
so far) and accepted. Cells a searcher has no value for are empty (random search has no
temperature or h; calibration probes have no temperature).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ticketlab.plots import twin_axis_lines
from ticketlab.store import atomic_write_text, csv_text

COLUMNS = ("step", "temperature", "h", "candidate", "current", "mean", "best", "accepted")
_TYPES = {"step": int, "h": int, "accepted": lambda text: text == "True"}


def write_history(path: Path, history: Sequence[dict[str, Any]]) -> None:
    atomic_write_text(path, csv_text([{k: "" if row[k] is None else row[k] for k in COLUMNS} for row in history],
                                     COLUMNS))


def read_history(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as handle:
        return [{key: None if text == "" else _TYPES.get(key, float)(text) for key, text in row.items()}
                for row in csv.DictReader(handle)]


def plot_history(path: Path, history: Sequence[dict[str, Any]], units: int, title: str) -> None:
    """Scores over the search (the running mean of accepted scores in thesis mode, else the
    current mask's score, in red) and the relative Hamming distance 2h / units of its moves (blue)."""
    def column(key: str, scale: float = 1.0) -> list[float]:
        return [math.nan if row[key] is None else row[key] * scale for row in history]

    followed = "mean" if any(row["mean"] is not None for row in history) else "current"
    label = "running mean of accepted scores" if followed == "mean" else "current mask's score"
    twin_axis_lines(
        path, column("step"),
        {"candidate score": column("candidate"), label: column(followed), "best score": column("best")},
        {"relative Hamming distance 2h / units": column("h", 2 / units)},
        xlabel="evaluations", left_label="score", right_label="relative Hamming distance of a move",
        colors={"candidate score": "0.6", label: "red", "best score": "black",
                "relative Hamming distance 2h / units": "blue"},
        dots=("candidate score",), title=title)
