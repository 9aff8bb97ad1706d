"""Every file name inside a run directory, in one place (OpenLTH's foundations/paths.py habit).

Stages name their artifacts from here, so a reader finds what a run holds without reading
the stage, and no name is spelt twice. Runs hold data, not pictures: `ticketlab report` draws.
"""

from __future__ import annotations

# --- every run (store, manifest) ----------------------------------------------------------
HPARAMS = "hparams.json"  # what defines the run, and the command that made it
SUMMARY = "summary.json"  # written last: its presence means "done"
MANIFEST = "manifest.json"  # the SHA-256 of every file written into the run
LOCK = ".lock"
TEMPORARY = ".*.tmp"  # what atomic writes' temporaries are named like
DIVERGED = "diverged.json"  # a training whose loss became non-finite: where and how

# --- trainings (train, level, control, ticket, small, earlybird) --------------------------
METRICS = "metrics.csv"
RESUME = "resume.pt"  # only while a training is unfinished
CHECKPOINTS = "checkpoints"


def checkpoint(step: str) -> str:
    """A saved step's weights: `0it`, `3ep`, `best`, `final`, `earlybird-0.5`."""
    return f"{CHECKPOINTS}/{step}.pt"


# --- masks (prune, search, level, control, ticket) ----------------------------------------
MASK = "mask.safetensors"
MASK_REPORT = "report.txt"  # per-layer kept / total / sparsity

# --- searches -----------------------------------------------------------------------------
MEAN_MASK = "mask_running_mean.safetensors"  # thesis mode: the best by the running mean
SEARCH_STATE = "state.pt"  # only while a search is unfinished
HISTORY = "history.csv"

# --- shrunk networks (shrink, small) ------------------------------------------------------
MODEL = "model.safetensors"
ONNX = "model.onnx"

# --- early birds --------------------------------------------------------------------------
EARLYBIRD = "earlybird.json"  # per ratio: the epoch found, and its share of training
DISTANCES = "distances.json"


def ticket(ratio: float) -> str:
    """The checkpoint name (for `checkpoint`) of a ratio's early-bird ticket."""
    return f"earlybird-{ratio:g}"


# --- sweeps -------------------------------------------------------------------------------
SWEEP_TABLE = "sweep.csv"
SWEEP_HISTOGRAMS = "histograms.json"  # per method and k, what survives, binned


# --- layer sensitivity ---------------------------------------------------------------------
SENSITIVITY_TABLE = "sensitivity.csv"

# --- analyses of masks (similarity, orthogonality) -----------------------------------------
SIMILARITY = "similarity.json"  # labels, and a matrix per measure
ORTHOGONALITY_TABLE = "orthogonality.csv"  # a row per mask, a column per layer

# --- beside the runs, in the runs directory -------------------------------------------------
USER_DATA = "data"  # a user's in-memory data given to a cached stage, one .npz per content


def user_data_file(digest: str) -> str:
    return f"{USER_DATA}/{digest}.npz"


# --- reports over other runs (lottery, comparison, structured, valsize) -------------------
TABLE = "table.csv"
RUNS_TABLE = "runs.csv"  # a comparison's one row per retrained mask
