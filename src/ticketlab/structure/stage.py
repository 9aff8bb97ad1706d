"""The shrink stage: a structured mask cut out of its trained weights, as a smaller dense model.

`shrink_run(source, runtime, step)` takes a finished prune or search run with a structured
mask, loads its training run's weights at `step` ("final" by default, whatever checkpoint
the mask was scored at: pass the source's `at` to shrink the very weights it scored), cuts
the pruned units out and saves the small model as model.safetensors (`ticketlab.load`
reads it back). summary.json reports parameters, MACs and measured CPU latency of the dense
and the small model, how closely the small one matches the masked one, and its accuracy,
which is the masked network's.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketlab import paths
from ticketlab.config import PruneConfig, Runtime, SearchConfig, TicketlabError, from_dict
from ticketlab.models.tracing import channel_groups
from ticketlab.search.stage import SearchRun, search_run_handle
from ticketlab.sparsity.mask import Mask, unit_mask_to_mask
from ticketlab.sparsity.prune import PruneRun, masked_metrics, prune_run_handle
from ticketlab.stage import Stage, check_found
from ticketlab.store import find_run
from ticketlab.structure.saving import save_model
from ticketlab.structure.surgery import check_equivalent, count_macs, count_parameters, shrink
from ticketlab.structure.tp_backend import shrink_zoo_with_torch_pruning
from ticketlab.training.stage import apply_runtime, find_train_run, init_model

CHECK_IMAGES = 256  # validation images the small and the masked model are compared on
LATENCY_BATCHES = (1, 64)
LATENCY_WARMUP = 3
LATENCY_REPEATS = 15
BACKENDS = ("ticketlab", "torch-pruning")


@dataclass
class ShrinkRun(Stage):
    """A structured mask's network made physically smaller: the pruned units cut out."""

    source: PruneRun | SearchRun
    step: str
    KIND = "shrink"
    ARTIFACTS = (paths.MODEL,)
    MAY_WRITE = (paths.ONNX,)  # added to the finished run by `ticketlab shrink --onnx`

    @property
    def model_file(self) -> Path:
        return self.run.file(paths.MODEL)

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        params = summary.get("parameters", {})
        kept = f", {100 * params['small'] / params['dense']:.1f}% of parameters" if params else ""
        return (f"{hparams['identity']['mask']} shrunk at {hparams['identity']['step']}{kept}",
                summary.get("metrics", {}))


def units_from_mask(model: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    """Each channel group's keep-flags: a unit is kept iff any of its producer entries in `mask` is.

    Raises TicketlabError unless the mask is exactly what those flags expand to, that is,
    unless it prunes whole units only.
    """
    mask.check_fits(model)
    units = {}
    for group in channel_groups(model):
        pieces = [piece for piece in group.producers if piece.param in mask and piece.dim == 0]
        if not pieces:  # the mask leaves this group's layers alone
            units[group.name] = torch.ones(group.size, dtype=torch.bool)
            continue
        units[group.name] = torch.tensor([any(bool(mask[p.param][p.index(unit)].any()) for p in pieces)
                                          for unit in range(group.size)])
    expanded = unit_mask_to_mask(model, units, names=list(mask))
    for name in mask:
        if not torch.equal(expanded[name], mask[name]):
            raise TicketlabError(f"not a structured mask: {name} has pruned entries inside kept units; shrinking "
                                 "needs whole units pruned (prune --structured, or search --granularity filter)")
    return units


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: Sequence[int], batch: int,
                    repeats: int = LATENCY_REPEATS, warmup: int = LATENCY_WARMUP) -> float:
    """Median milliseconds of one eval-mode forward pass of `batch` random inputs, on the CPU, 1 thread."""
    model = copy.deepcopy(model).to("cpu").eval()
    x = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for i in range(warmup + repeats):
            started = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return 1000 * statistics.median(times)


def is_structured(source: PruneRun | SearchRun) -> bool:
    """Whether the run's mask keeps or prunes whole units (what shrinking needs)."""
    return source.config.structured if isinstance(source, PruneRun) else source.config.granularity == "filter"


def check_structured(source: PruneRun | SearchRun) -> None:
    if not is_structured(source):
        raise TicketlabError(f"{source.run.name} has a mask of single weights; shrinking needs a structured mask "
                             "(prune --structured, or search --granularity filter)")


def shrink_run_handle(source: PruneRun | SearchRun, step: str = "final", backend: str = "ticketlab",
                      runs_dir: str | None = None) -> ShrinkRun:
    """The shrink run these inputs name, finished or not."""
    inputs = {"mask": source.run.name, "step": step, **({"backend": backend} if backend != "ticketlab" else {})}
    return ShrinkRun(ShrinkRun.run_for(inputs, runs_dir), source, step)


def shrink_run(source: PruneRun | SearchRun, runtime: Runtime = Runtime(), step: str = "final",
               backend: str = "ticketlab") -> ShrinkRun:
    """Cut the source's pruned units out of its training run's weights at `step`, or return the
    finished shrink run with the same inputs. Writes model.safetensors and summary.json.
    backend="torch-pruning" cuts with that package instead (tp_backend), as a cross-check."""
    check_structured(source)
    if backend not in BACKENDS:
        raise TicketlabError(f"unknown shrink backend {backend!r}; expected {' or '.join(BACKENDS)}")
    result = shrink_run_handle(source, step, backend, runtime.runs_dir)
    inputs = result.run.identity

    def write(made: tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]) -> dict[str, Any]:
        small, units, summary = made
        save_model(small, result.run.file(paths.MODEL), units, source.train.model_config)
        return summary

    result.produce(runtime.force, lambda: (inputs, _shrink(source, step, backend, runtime)), write)
    return result


def _shrink(source: PruneRun | SearchRun, step: str, backend: str,
            runtime: Runtime) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """The small network, its keep-flags and the shrink run's summary: cut, checked, measured."""
    train = source.train
    device = apply_runtime(runtime)
    data = train.dataset(runtime, device)
    model = init_model(train.model_config, data, train.training.seed).to(device)
    model.load_state_dict(train.state_dict(step))
    units = units_from_mask(model, source.mask())
    small = shrink(model, units) if backend == "ticketlab" else shrink_zoo_with_torch_pruning(model, units)
    masked = copy.deepcopy(model)
    unit_mask_to_mask(model, units).apply(masked)
    macs = {"dense": count_macs(model, data.input_shape), "small": count_macs(small, data.input_shape)}
    latency = {name: {f"batch_{batch}": measure_latency(net, data.input_shape, batch) for batch in LATENCY_BATCHES}
               for name, net in (("dense", model), ("small", small))}
    summary = {
        "source": source.run.name, "train": train.run.name, "step": step, "backend": backend,
        "units": {name: {"kept": int(keep.sum()), "total": len(keep)} for name, keep in units.items()},
        "parameters": {"dense": count_parameters(model), "small": count_parameters(small)},
        "macs": macs, "latency_ms": latency,
        "speedup": {"macs": macs["dense"] / macs["small"],
                    **{f"latency_{key}": latency["dense"][key] / latency["small"][key] for key in latency["dense"]}},
        "max_difference": check_equivalent(masked, small, data.val.x[:CHECK_IMAGES]),
        "metrics": masked_metrics(small, data, None),
    }
    return small, units, summary


def find_mask_run(ref: str, runs_dir: str | None = None) -> PruneRun | SearchRun:
    """A finished prune or search run, by its directory or its name (`prune-3fc3da0406aa`)."""
    path, hparams = find_run(ref, ["prune", "search"], runs_dir)
    kind = hparams["kind"]
    train = find_train_run(hparams["train"], str(path.parent))
    cfg = from_dict(PruneConfig if kind == "prune" else SearchConfig, hparams[kind], f"{path}/hparams.json {kind}")
    source = prune_run_handle(train, cfg, str(path.parent)) if isinstance(cfg, PruneConfig) else \
        search_run_handle(train, cfg, str(path.parent))
    check_found(source, path)
    return source
