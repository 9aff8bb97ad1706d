"""A search's history: one row per evaluation, as CSV, and the thesis's figure of it.

Columns: step (evaluations so far), temperature and h (the move's size) of the step,
candidate (the evaluated mask's score), current (the current mask's score after the
decision), mean (thesis mode: the running mean of accepted scores), best (the best score
so far) and accepted. Cells a searcher has no value for are empty (random search has no
temperature or h; calibration probes have no temperature).

REINFORCE adds episode (= step: one evaluation per episode), reward, baseline (the moving
average its advantage was taken against; empty for the first batch, which uses its own
mean) and entropy (of the policy for that episode); these columns are written only when
the rows have them, so other searches' files stay as they were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ticketlab.report.plots import twin_axis_lines
from ticketlab.store import atomic_write_text, csv_text, read_csv

COLUMNS = ("step", "temperature", "h", "candidate", "current", "mean", "best", "accepted")
AGENT_COLUMNS = ("episode", "reward", "baseline", "entropy")
_TYPES = {"step": int, "h": int, "episode": int, "accepted": lambda text: text == "True"}


def write_history(path: Path, history: Sequence[dict[str, Any]]) -> None:
    columns = COLUMNS + (AGENT_COLUMNS if history and AGENT_COLUMNS[0] in history[0] else ())
    atomic_write_text(path, csv_text([{k: "" if row[k] is None else row[k] for k in columns} for row in history],
                                     columns))


def read_history(path: Path) -> list[dict[str, Any]]:
    return [{key: None if text == "" else _TYPES.get(key, float)(text) for key, text in row.items()}
            for row in read_csv(path)]


def _column(history: Sequence[dict[str, Any]], key: str, scale: float = 1.0) -> list[float]:
    return [math.nan if row[key] is None else row[key] * scale for row in history]


def plot_history(path: Path, history: Sequence[dict[str, Any]], units: int, title: str) -> None:
    """Scores over the search (the running mean of accepted scores in thesis mode, else the
    current mask's score, in red) and the relative Hamming distance 2h / units of its moves (blue);
    for REINFORCE, its learning curve (plot_learning_curve)."""
    if history and AGENT_COLUMNS[0] in history[0]:
        plot_learning_curve(path, history, title)
        return
    followed = "mean" if any(row["mean"] is not None for row in history) else "current"
    label = "running mean of accepted scores" if followed == "mean" else "current mask's score"
    twin_axis_lines(
        path, _column(history, "step"),
        {"candidate score": _column(history, "candidate"), label: _column(history, followed),
         "best score": _column(history, "best")},
        {"relative Hamming distance 2h / units": _column(history, "h", 2 / units)},
        xlabel="evaluations", left_label="score", right_label="relative Hamming distance of a move",
        colors={"candidate score": "0.6", label: "red", "best score": "black",
                "relative Hamming distance 2h / units": "blue"},
        dots=("candidate score",), title=title)


def plot_learning_curve(path: Path, history: Sequence[dict[str, Any]], title: str) -> None:
    """REINFORCE's episodes: reward (dots), baseline and best reward so far, and the policy's entropy (blue)."""
    twin_axis_lines(
        path, _column(history, "episode"),
        {"reward": _column(history, "reward"), "baseline": _column(history, "baseline"),
         "best": _column(history, "best")},
        {"policy entropy": _column(history, "entropy")},
        xlabel="episode (evaluation)", left_label="reward (score)", right_label="entropy (nats)",
        colors={"reward": "0.6", "baseline": "red", "best": "black", "policy entropy": "blue"},
        dots=("reward",), title=title)
