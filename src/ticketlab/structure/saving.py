"""Shrunk models as files: architecture and weights that reload with one call, no mask machinery.

    save_model(small, "small.safetensors", units, model_config)  # a zoo model
    model = ticketlab.load("small.safetensors")  # a plain nn.Module in eval mode

    ticketlab.save_model(small, "mine.safetensors", units)  # a traced model of your own
    model = ticketlab.load("mine.safetensors", factory=MyNet)

One safetensors file holds the state_dict; its metadata holds, as JSON, what rebuilds the
architecture: the zoo model's config (or, for a model of the user's, the input shape it was
traced on), input shape, class count and each channel group's keep-flags. Loading builds the
model (the zoo's, or `factory()`), shrinks it with the flags, and loads the weights, so nothing
in the file is ever run as code (never `weights_only=False`). One file means one atomic rename.
`load` also reads an unstructured ticket's sparse file (sparsity.ticket_file.save_ticket).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors
from torch import nn

from ticketlab.config import ModelConfig, TicketlabError, check_kernels
from ticketlab.manifest import verified_bytes
from ticketlab.models import ZooModel
from ticketlab.models.sparse_linear import SparseLinear
from ticketlab.models.tracing import trace, traced_input
from ticketlab.sparsity.kernels import densify
from ticketlab.sparsity.ticket_file import is_ticket, rebuilt, ticket_from, zoo_header
from ticketlab.store import atomic_path
from ticketlab.structure.surgery import shrink

FORMAT = "ticketlab-shrunk-model"
VERSION = 1
METADATA_KEY = "ticketlab"


def save_model(model: nn.Module, path: str | Path, units: Mapping[str, torch.Tensor],
               model_config: ModelConfig | None = None) -> None:
    """Write `model`, shrunk by `units`, to one safetensors file: a zoo model with the config that
    built it, or a model of the user's that was traced (as `shrink` leaves a traced model's copy)."""
    flags = {name: [bool(flag) for flag in keep] for name, keep in units.items()}
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION, "units": flags}
    if isinstance(model, ZooModel):
        header.update(zoo_header(model, model_config, "save_model"))
    else:
        example = traced_input(model)
        if example is None:
            raise TicketlabError(f"save_model saves a {type(model).__name__} it can rebuild: trace the model before "
                                 "shrinking it (ticketlab.trace(model, example_inputs)), so the file can say how")
        header.update(model_class=f"{type(model).__module__}.{type(model).__qualname__}",
                      input_shape=list(example.shape[1:]))
    tensors = {key: t.detach().to("cpu").contiguous() for key, t in model.state_dict().items()}
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(save_safetensors(tensors, metadata={METADATA_KEY: json.dumps(header)}))


def _read(path: Path, tickets: bool = False) -> tuple[dict, dict[str, torch.Tensor]]:
    """A `save_model` file's header and tensors (or, with `tickets`, a `save_ticket` file's); raises
    what a damaged file raises."""
    with safe_open(path, "pt") as handle:
        header = json.loads((handle.metadata() or {})[METADATA_KEY])
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    if not (tickets and is_ticket(header)) and (header.get("format") != FORMAT or header.get("version") != VERSION):
        raise ValueError(f"format {header.get('format')!r} version {header.get('version')!r}")
    return header, state


def _flags(header: dict) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(flags, dtype=torch.bool) for name, flags in header["units"].items()}


def saved_units(path: str | Path) -> dict[str, torch.Tensor]:
    """The keep-flags a `save_model` file was shrunk with."""
    verified_bytes(Path(path), "model file")
    header, _ = _read(Path(path))
    return _flags(header)


def load(path: str | Path, factory: Callable[[], nn.Module] | None = None, kernels: str = "auto") -> nn.Module:
    """The model a `save_model` file (a shrink run's model.safetensors) or a `save_ticket` file
    (sparsity.ticket_file) holds, in eval mode; a model of the user's is rebuilt by `factory()`
    (its class, say), traced and shrunk as it was. A ticket's masked Linear layers run on `kernels`
    (sparsity.kernels: auto, sparse where that is faster; sparse for all; dense for plain nn.Linear)."""
    verified_bytes(Path(path), "model file")
    check_kernels(kernels)
    try:
        header, state = _read(Path(path), tickets=True)
        if is_ticket(header):
            return ticket_from(header, state, factory, kernels, path)
        model = rebuilt(header, factory, path)
        if "model_config" not in header:  # a model of the user's: traced as it was when shrunk
            trace(model, torch.zeros((2, *header["input_shape"])))
        small = shrink(model, _flags(header))
        small.load_state_dict(state)
    except FileNotFoundError:
        raise TicketlabError(f"model file {path} does not exist") from None
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError, TicketlabError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TicketlabError(f"model file {path} is corrupt or not a saved ticketlab model ({reason})") from None
    return small.eval()


def export_onnx(model: nn.Module, path: str | Path, input_shape: Sequence[int]) -> None:
    """Write `model` as ONNX for inputs of `input_shape` (C, H, W), any batch size (needs `onnx`)."""
    # torch's TorchScript exporter imports onnx; the newer dynamo exporter also needs onnxscript.
    if importlib.util.find_spec("onnx") is None:
        raise TicketlabError("ONNX export needs the onnx package: pip install onnx")
    if any(isinstance(m, SparseLinear) for m in model.modules()):  # exported as the dense layers they stand for
        model = copy.deepcopy(model)
        densify(model)
    param = next(model.parameters())
    example = torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype)
    training = model.training
    model.eval()
    try:
        with atomic_path(Path(path)) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except Exception as exc:  # the exporter raises many types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TicketlabError(f"ONNX export to {path} failed ({reason})") from None
    finally:
        model.train(training)
