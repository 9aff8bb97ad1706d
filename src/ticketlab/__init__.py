"""ticketlab: find lottery tickets — sparse subnetworks that train as well as their dense parent.

The command line is a thin layer over these functions; a notebook can call them directly,
or use `fit` with its own nn.Module and a Dataset.
"""

from ticketlab.config import DataConfig, ModelConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.data import Dataset, load_data
from ticketlab.models import build_model
from ticketlab.structure.saving import load
from ticketlab.training.loop import evaluate, fit
from ticketlab.training.stage import TrainRun, train

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """load_preset, imported when first asked for: it brings in every section's stages (half a second
    more for each command that never reads a preset)."""
    if name == "load_preset":
        from ticketlab.experiments.preset import load_preset

        return load_preset
    raise AttributeError(f"module 'ticketlab' has no attribute {name!r}")


__all__ = [
    "DataConfig", "Dataset", "ModelConfig", "Runtime", "TicketlabError", "TrainConfig", "TrainRun",
    "build_model", "evaluate", "fit", "load", "load_data", "load_preset", "train",
]
