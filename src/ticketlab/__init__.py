"""ticketlab: find lottery tickets — sparse subnetworks that train as well as their dense parent.

The command line is a thin layer over these functions; a notebook can call them directly,
or use `fit` with its own nn.Module and a Dataset, and prune it: `trace` derives a model's
channel groups, `score_and_select` makes a mask by any criterion, `shrink` cuts the pruned units out.
"""

from ticketlab.config import DataConfig, ModelConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.data import Dataset, load_data
from ticketlab.data.user import dataset_from
from ticketlab.models import build_model
from ticketlab.models.tracing import channel_groups, trace
from ticketlab.sparsity.criteria import ScoreContext
from ticketlab.sparsity.mask import Mask, prunable_names
from ticketlab.sparsity.masked import MaskedTraining, masked_fit
from ticketlab.sparsity.selection import score_and_select
from ticketlab.sparsity.ticket_file import save_ticket
from ticketlab.structure.saving import export_onnx, load, save_model
from ticketlab.structure.stage import units_from_mask
from ticketlab.structure.surgery import shrink
from ticketlab.training.loop import evaluate, fit
from ticketlab.training.stage import TrainRun, train, user_data

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """load_preset, imported when first asked for: it brings in every section's stages (half a second
    more for each command that never reads a preset)."""
    if name == "load_preset":
        from ticketlab.experiments.preset import load_preset

        return load_preset
    raise AttributeError(f"module 'ticketlab' has no attribute {name!r}")


__all__ = [
    "DataConfig", "Dataset", "Mask", "MaskedTraining", "ModelConfig", "Runtime", "ScoreContext", "TicketlabError",
    "TrainConfig", "TrainRun", "build_model", "channel_groups", "dataset_from", "evaluate", "export_onnx", "fit", "load",
    "load_data", "load_preset", "masked_fit", "prunable_names", "save_model", "save_ticket", "score_and_select",
    "shrink", "trace", "train", "units_from_mask", "user_data",
]
