"""A search's history: one row per evaluation, as CSV (the report draws the thesis's figure of it).

Columns: step (evaluations so far), temperature and h (the move's size) of the step,
candidate (the evaluated mask's score), current (the current mask's score after the
decision), mean (thesis mode: the running mean of accepted scores), best (the best score
so far) and accepted. Cells a searcher has no value for are empty (random search has no
temperature or h; calibration probes have no temperature).

held_out_best, every TRACK_EVERY evaluations (search.stage): the best mask so far scored on the
validation images the search never saw, so the report can draw how far the objective and
held-out accuracy part (the thesis saw its search fit its small validation set).

REINFORCE adds episode (= step: one evaluation per episode), reward, baseline (the moving
average its advantage was taken against; empty for the first batch, which uses its own
mean) and entropy (of the policy for that episode); these columns are written only when
the rows have them, so other searches' files stay as they were. The gradient searchers
(search.gradient) add loss: the mean training loss of the step's pass (empty for the first row).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ticketlab.store import atomic_write_text, csv_text, read_csv

COLUMNS = ("step", "temperature", "h", "candidate", "current", "mean", "best", "accepted")
HELD_OUT = "held_out_best"
AGENT_COLUMNS = ("episode", "reward", "baseline", "entropy")
GRADIENT_COLUMNS = ("loss",)
_TYPES = {"step": int, "h": int, "episode": int, "accepted": lambda text: text == "True"}


def write_history(path: Path, history: Sequence[dict[str, Any]]) -> None:
    columns = COLUMNS + ((HELD_OUT,) if any(HELD_OUT in row for row in history) else ()) + \
        (AGENT_COLUMNS if history and AGENT_COLUMNS[0] in history[0] else ()) + \
        (GRADIENT_COLUMNS if history and GRADIENT_COLUMNS[0] in history[0] else ())
    atomic_write_text(path, csv_text([{k: "" if row.get(k) is None else row[k] for k in columns} for row in history],
                                     columns))


def read_history(path: Path) -> list[dict[str, Any]]:
    return [{key: None if text == "" else _TYPES.get(key, float)(text) for key, text in row.items()}
            for row in read_csv(path)]
