"""Masks: for each prunable parameter name, a boolean tensor of its shape (True = kept).

A structured mask keeps or prunes whole units (neurons, filters, channels): one flag per
unit of each channel group, expanded to every parameter slice the model declares for that
unit (weights, bias, BatchNorm scale and shift, and the next layers' inputs).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.manifest import verified_bytes
from ticketlab.models.tracing import channel_groups
from ticketlab.store import atomic_path

PRUNABLE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_names(model: nn.Module, patterns: Iterable[str] | None = None) -> list[str]:
    """The parameters a mask covers: the model's declared prunable weights (zoo models), else
    every Linear/Conv weight; or, with `patterns`, the parameters matching any of them
    (exact names or shell-style patterns like `features.*.weight`)."""
    params = dict(model.named_parameters())
    if patterns is not None:
        patterns = list(patterns)
        chosen = [name for name in params if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in params)]
        if unmatched:
            raise TicketlabError(
                f"no parameter matches {', '.join(unmatched)}; parameters are e.g. {', '.join(list(params)[:4])}"
            )
        return chosen
    declared = getattr(model, "prunable_parameters", None)
    if declared is not None:
        return list(declared())
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, PRUNABLE_MODULES)]


def output_layer_names(model: nn.Module) -> list[str]:
    """The output layer's parameters: the zoo model's declared layer, else the last Linear/Conv."""
    layer = getattr(model, "output_layer", None)
    if layer is None:
        layers = [name for name, m in model.named_modules() if isinstance(m, PRUNABLE_MODULES)]
        if not layers:
            raise TicketlabError("the model has no Linear or Conv layer to prune")
        layer = layers[-1]
    return [name for name, _ in model.named_parameters() if name.rsplit(".", 1)[0] == layer]


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    total: int
    kept: int

    @property
    def pruned(self) -> int:
        return self.total - self.kept

    @property
    def sparsity(self) -> float:
        return self.pruned / self.total if self.total else 0.0


class Mask(Mapping[str, torch.Tensor]):
    """An immutable mapping from parameter name to a boolean keep-tensor (on the CPU)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._tensors = {name: t.detach().to("cpu", torch.bool) for name, t in tensors.items()}

    @classmethod
    def ones(cls, model: nn.Module, names: Iterable[str] | None = None) -> Mask:
        """Keep everything, over `names` (default: the model's prunable parameters)."""
        params = dict(model.named_parameters())
        return cls({name: torch.ones_like(params[name], dtype=torch.bool)
                    for name in (names if names is not None else prunable_names(model))})

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Mask) and self.keys() == other.keys()
                and all(torch.equal(self[n], other[n]) for n in self))

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, {self.kept()}/{self.total()} kept, sparsity {self.sparsity():.4f})"

    # --- counting -------------------------------------------------------------------------
    def total(self) -> int:
        return sum(t.numel() for t in self._tensors.values())

    def kept(self) -> int:
        return sum(int(t.sum()) for t in self._tensors.values())

    def sparsity(self) -> float:
        total = self.total()
        return 1 - self.kept() / total if total else 0.0

    def layers(self) -> list[LayerSparsity]:
        return [LayerSparsity(name, t.numel(), int(t.sum())) for name, t in self._tensors.items()]

    def report(self) -> str:
        """Per-layer and total counts and sparsity, as a text table."""
        rows = [f"{'parameter':<32} {'kept':>10} {'total':>10} {'sparsity':>9}"]
        rows += [f"{r.name:<32} {r.kept:>10} {r.total:>10} {100 * r.sparsity:>8.2f}%" for r in self.layers()]
        rows.append(f"{'total':<32} {self.kept():>10} {self.total():>10} {100 * self.sparsity():>8.2f}%")
        return "\n".join(rows)

    def shuffled(self, generator: torch.Generator) -> Mask:
        """A random mask keeping as many entries of each layer as this one (the random-mask control,
        and the floor of mask similarity)."""
        shuffled = {}
        for name, keep in self._tensors.items():
            order = torch.randperm(keep.numel(), generator=generator)
            flat = torch.zeros(keep.numel(), dtype=torch.bool)
            flat[order[: int(keep.sum())]] = True
            shuffled[name] = flat.view_as(keep)
        return Mask(shuffled)

    # --- comparing ------------------------------------------------------------------------
    def hamming(self, other: Mask) -> int:
        """The number of entries on which two masks over the same parameters differ."""
        self._check_same_layout(other)
        return sum(int((self[n] != other[n]).sum()) for n in self)

    def _check_same_layout(self, other: Mask) -> None:
        if self.keys() != other.keys() or any(self[n].shape != other[n].shape for n in self):
            raise TicketlabError("the two masks cover different parameters or shapes; expected the same model")

    # --- models -----------------------------------------------------------------------------
    def check_fits(self, model: nn.Module) -> None:
        """Raise a clear error unless every masked name is a parameter of this shape in `model`."""
        params = dict(model.named_parameters())
        for name, tensor in self._tensors.items():
            if name not in params:
                raise TicketlabError(f"the mask covers {name!r}, which the model does not have; "
                                     "expected a mask made for this model")
            if params[name].shape != tensor.shape:
                raise TicketlabError(f"the mask for {name} has shape {tuple(tensor.shape)}, the model's "
                                     f"parameter {tuple(params[name].shape)}; expected a mask made for this model")

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned entries of the model's parameters, in place."""
        self.check_fits(model)
        params = dict(model.named_parameters())
        for name, keep in self._tensors.items():
            params[name].mul_(keep.to(params[name].device))

    # --- files ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        # safetensors sorts tensors by name; the order (the model's) is kept in the metadata,
        # because scoring and random draws walk a mask's layers in order.
        tensors = {n: t.contiguous() for n, t in self._tensors.items()}
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(save_safetensors(tensors, metadata={"order": json.dumps(list(tensors))}))

    @classmethod
    def load(cls, path: str | Path) -> Mask:
        verified_bytes(Path(path), "mask file")
        try:
            with safe_open(Path(path), "pt") as handle:
                order = json.loads((handle.metadata() or {}).get("order", "[]")) or list(handle.keys())
                return cls({name: handle.get_tensor(name) for name in order})
        except FileNotFoundError:
            raise TicketlabError(f"mask file {path} does not exist") from None
        except (SafetensorError, ValueError, KeyError) as exc:
            raise TicketlabError(f"mask file {path} is corrupt or not a mask ({exc})") from None


def unit_mask_to_mask(model: nn.Module, units: Mapping[str, torch.Tensor],
                      names: Iterable[str] | None = None) -> Mask:
    """Expand a structured mask (group name -> one keep-flag per unit) to a parameter mask.

    The result covers `names` (default: the prunable parameters) plus every other parameter
    a pruned unit touches: biases and BatchNorm scale and shift, so the unit outputs zero.
    """
    groups = {g.name: g for g in channel_groups(model)}
    params = dict(model.named_parameters())
    tensors = {n: torch.ones_like(params[n], dtype=torch.bool)
               for n in (names if names is not None else prunable_names(model))}
    for group_name, keep in units.items():
        if group_name not in groups:
            raise TicketlabError(f"unknown channel group {group_name!r}; the model has {', '.join(groups)}")
        group = groups[group_name]
        if keep.shape != (group.size,):
            raise TicketlabError(f"structured mask for {group_name} has {tuple(keep.shape)} flags; "
                                 f"expected ({group.size},)")
        pruned = (~keep.bool()).nonzero().flatten().tolist()
        for piece in (*group.producers, *group.consumers):
            if piece.param not in params:  # running statistics are buffers: nothing to mask
                continue
            target = tensors.setdefault(piece.param, torch.ones_like(params[piece.param], dtype=torch.bool))
            for unit in pruned:
                target.narrow(piece.dim, piece.index(unit).start, piece.block).fill_(False)
    return Mask(tensors)
