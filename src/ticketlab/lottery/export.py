"""A retrained ticket (a lottery level, a control, a compared mask's retraining) as a file of its own.

    ticketlab export --run level-3fc3da0406aa -o ticket.safetensors  # kept weights in CSR form
    ticketlab export --run level-3fc3da0406aa -o ticket.onnx          # the dense network, for ONNX consumers

`ticketlab.load("ticket.safetensors")` gives the network with its masked Linear layers on sparse
kernels where they are faster (sparsity.ticket_file, sparsity.kernels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ticketlab.config import TicketlabError
from ticketlab.data import data_shape
from ticketlab.lottery.retrain import ControlRun, LevelRun, Retrained, TicketRun
from ticketlab.models import build_model
from ticketlab.paths import HPARAMS
from ticketlab.sparsity.ticket_file import save_ticket
from ticketlab.stage import check_found
from ticketlab.store import Run, find_run, read_json
from ticketlab.structure.saving import export_onnx
from ticketlab.training.stage import TrainRun, find_train_run

RETRAINED: dict[str, type[Retrained]] = {"level": LevelRun, "control": ControlRun, "ticket": TicketRun}


def find_retrained(ref: str, runs_dir: str | None = None) -> tuple[Retrained, TrainRun]:
    """A finished retraining under a mask, by its directory or name, and the dense run it belongs to."""
    path, hparams = find_run(ref, list(RETRAINED), runs_dir)
    retrained = RETRAINED[hparams["kind"]](Run(hparams["kind"], hparams["identity"], path.parent))
    check_found(retrained, path)
    return retrained, _dense_of(hparams, path.parent)


def _dense_of(hparams: dict[str, Any], root: Path) -> TrainRun:
    kind = hparams["kind"]
    if kind == "control":  # of a level
        return _dense_of(read_json(root / hparams["level"] / HPARAMS), root)
    name = hparams["dense"] if kind == "level" else read_json(root / hparams["mask"] / HPARAMS)["train"]
    return find_train_run(name, str(root))


def export_ticket(ref: str, out: str | Path, runs_dir: str | None = None, step: str = "best") -> dict[str, Any]:
    """Write the retrained run `ref`'s weights at `step` under its mask to `out`: a sparse ticket file
    (.safetensors), or ONNX (.onnx). Returns what was written."""
    out = Path(out)
    if out.suffix not in (".safetensors", ".onnx"):
        raise TicketlabError(f"cannot tell what to write to {out}: expected a file name ending in .safetensors "
                             "(the kept weights, sparse) or .onnx (the dense network)")
    retrained, dense = find_retrained(ref, runs_dir)
    input_shape, num_classes = data_shape(dense.data)
    model = build_model(dense.model_config, input_shape, num_classes)
    model.load_state_dict(retrained.state_dict(step))
    mask = retrained.mask()
    if out.suffix == ".onnx":
        mask.apply(model)
        export_onnx(model, out, input_shape)
    else:
        save_ticket(model, out, mask, dense.model_config)
    return {"run": retrained.run.name, "step": step, "path": str(out), "bytes": out.stat().st_size,
            "kept": mask.kept(), "total": mask.total(), "format": "onnx" if out.suffix == ".onnx" else "sparse"}
