"""Unstructured tickets as files: the kept weights in CSR form, and a reload that runs them sparse.

    save_ticket(model, "ticket.safetensors", mask, model_config)  # a zoo model
    model = ticketlab.load("ticket.safetensors")  # sparse enough Linear layers on sparse kernels, eval mode
    model = ticketlab.load("ticket.safetensors", kernels="dense")  # plain nn.Linear layers (ONNX export)

One safetensors file. Each masked parameter is stored as its kept values with CSR indices over
its 2-D view (rows: its first dimension; a conv weight's columns are its other dimensions
flattened): `NAME.values`, `NAME.col_indices` (int32), `NAME.crow_indices` (int32). Every other
tensor of the state_dict is stored as it is. The metadata says what rebuilds the network: the
zoo model's config with the input shape and class count, or, for a model of the user's, its
class (loading then needs `factory=`). Nothing in the file is run as code. At 3.6% of
LeNet-300-100's weights the file is about 1/13 of the dense checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from ticketlab.config import ModelConfig, TicketlabError, from_dict
from ticketlab.models import ZooModel, build_model
from ticketlab.sparsity.kernels import use_kernels
from ticketlab.sparsity.mask import Mask
from ticketlab.store import atomic_path

FORMAT = "ticketlab-sparse-ticket"
VERSION = 1
METADATA_KEY = "ticketlab"
PARTS = ("values", "col_indices", "crow_indices")


def save_ticket(model: nn.Module, path: str | Path, mask: Mask, model_config: ModelConfig | None = None) -> None:
    """Write `model` under `mask` (its pruned entries are dropped whatever they hold) to one file;
    `model` may have layers on sparse kernels (its state_dict is dense)."""
    state = model.state_dict()
    for name, keep in mask.items():
        if name not in state or state[name].shape != keep.shape:
            raise TicketlabError(f"the mask covers {name!r} of shape {tuple(keep.shape)}, which the model does not "
                                 "have; expected a mask made for this model")
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                              "sparse": {name: list(keep.shape) for name, keep in mask.items()}}
    if isinstance(model, ZooModel):
        header.update(zoo_header(model, model_config, "save_ticket"))
    else:
        header["model_class"] = f"{type(model).__module__}.{type(model).__qualname__}"
    tensors = {}
    for name, value in state.items():
        value = value.detach().to("cpu")
        if name not in mask:
            tensors[name] = value.contiguous()
            continue
        # The pattern is the mask's, not the nonzeros': a kept weight that is exactly zero stays kept.
        keep = mask[name].reshape(len(mask[name]), -1)
        tensors[f"{name}.values"] = value.reshape(keep.shape)[keep].contiguous()
        tensors[f"{name}.col_indices"] = keep.nonzero()[:, 1].int().contiguous()
        tensors[f"{name}.crow_indices"] = torch.cat([torch.zeros(1, dtype=torch.int64), keep.sum(1).cumsum(0)]).int()
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(save_safetensors(tensors, metadata={METADATA_KEY: json.dumps(header)}))


def zoo_header(model: ZooModel, model_config: ModelConfig | None, caller: str) -> dict[str, Any]:
    """What a model file's header holds to rebuild a zoo model (read back by `rebuilt`)."""
    if model_config is None:
        raise TicketlabError(f"{caller} needs the ModelConfig that built this zoo model")
    return {"model_config": dataclasses.asdict(model_config), "input_shape": list(model.input_shape),
            "num_classes": model.num_classes}


def rebuilt(header: dict[str, Any], factory: Callable[[], nn.Module] | None, path: str | Path) -> nn.Module:
    """The network a model file's header names, at some initialisation: the zoo model its config
    builds, or `factory()` for a model of the user's (this file's or a structure.saving one)."""
    if "model_config" in header:
        config = from_dict(ModelConfig, header["model_config"], "model_config")
        return build_model(config, tuple(header["input_shape"]), header["num_classes"],
                           generator=torch.Generator().manual_seed(0))
    if factory is None:
        raise TicketlabError(f"model file {path} holds a {header['model_class']}; load it with "
                             "ticketlab.load(path, factory=...) giving what builds one")
    return factory()


def is_ticket(header: dict[str, Any]) -> bool:
    return header.get("format") == FORMAT


def ticket_from(header: dict[str, Any], state: dict[str, torch.Tensor], factory: Callable[[], nn.Module] | None,
                kernels: str, path: str | Path) -> nn.Module:
    """The network a save_ticket file's header and tensors hold (raises what a damaged file raises)."""
    if header.get("version") != VERSION:
        raise ValueError(f"format {header.get('format')!r} version {header.get('version')!r}")
    model = rebuilt(header, factory, path)
    dense, keeps = {}, {}
    for name, shape in header["sparse"].items():
        values, col, crow = (state.pop(f"{name}.{part}") for part in PARTS)
        matrix = (len(crow) - 1, math.prod(shape) // max(len(crow) - 1, 1))
        csr = torch.sparse_csr_tensor(crow.long(), col.long(), values, matrix, check_invariants=True)
        keep = torch.sparse_csr_tensor(crow.long(), col.long(), torch.ones_like(values, dtype=torch.bool), matrix,
                                       check_invariants=True)
        dense[name], keeps[name] = csr.to_dense().view(shape), keep.to_dense().view(shape)
    model.load_state_dict({**state, **dense})
    use_kernels(model, Mask(keeps), kernels)
    return model.eval()
