"""Magnitude pruning without retraining (seed 004): how accuracy and loss fall as sparsity k grows.

A trained network is pruned two ways for each k, per layer, with the output layer left as
trained, and evaluated as it is (nothing is retrained):

- weight pruning removes the fraction k of each layer's weights with the smallest |w|;
- unit pruning removes the fraction k of each layer's units (neurons; filters in a conv
  net) with the smallest L2 norm of their incoming weights, together with everything the
  unit owns (bias, BatchNorm scale and shift, the next layer's input slice).

The `sparsity` column is the fraction of the hidden layers' prunable weights (output layer
excluded) that the mask zeroes. For unit pruning it counts the next layer's input columns
too, so it exceeds k: those weights read a unit that is gone.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ticketlab import paths
from ticketlab.config import Runtime, TicketlabError
from ticketlab.data import Dataset
from ticketlab.sparsity.criteria import ScoreContext
from ticketlab.sparsity.criteria.base import incoming_weights
from ticketlab.sparsity.kernels import evaluated_copy
from ticketlab.sparsity.mask import Mask, output_layer_names, prunable_names
from ticketlab.sparsity.selection import score_and_select
from ticketlab.stage import Stage
from ticketlab.store import Run, atomic_write_json, atomic_write_text, csv_text, read_csv
from ticketlab.training.loop import evaluate
from ticketlab.training.stage import TrainRun, apply_runtime, init_model

DEFAULT_KS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999)
METHODS = ("weight", "unit")
COLUMNS = ("k", "method", "sparsity", "test_loss", "test_acc", "val_loss", "val_acc")
HISTOGRAM_BINS = 50


@dataclass
class SweepResult(Stage):
    """A sweep: its run, one row per (k, method) in COLUMNS, and the dense accuracy."""

    KIND = "sweep"
    ARTIFACTS = (paths.SWEEP_TABLE, paths.SWEEP_HISTOGRAMS)

    @functools.cached_property
    def rows(self) -> list[dict[str, Any]]:
        return [{key: value if key == "method" else float(value) for key, value in row.items()}
                for row in read_csv(self.run.file(paths.SWEEP_TABLE))]

    @property
    def dense_test_acc(self) -> float:
        return self.summary["dense_test_acc"]

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        return (f"sweep of {summary.get('train', hparams.get('train'))} at "
                f"{len(summary.get('ks', hparams.get('ks', [])))} sparsities",
                {"val_acc": summary.get("dense_val_acc"), "test_acc": summary.get("dense_test_acc")}
                if "dense_test_acc" in summary else {})


def hidden_weights(model: nn.Module) -> list[str]:
    """The prunable weights outside the output layer: what a sweep prunes."""
    output = set(output_layer_names(model))
    return [name for name in prunable_names(model) if name not in output]


def weight_mask(model: nn.Module, k: float) -> Mask:
    """Keep the largest-|w| fraction 1-k of each hidden layer's weights."""
    return score_and_select(ScoreContext(model, hidden_weights(model)), "magnitude", k, scope="layerwise")


def unit_mask(model: nn.Module, k: float) -> Mask:
    """Prune the fraction k of each channel group's units with the smallest incoming-weight
    norm, and everything they own; l2_norm's fan-in scaling leaves the per-layer ranking as is."""
    mask = score_and_select(ScoreContext(model, hidden_weights(model)), "l2_norm", k, scope="layerwise")
    # The output layer's input columns of pruned units already multiply zeros; leaving them
    # unmasked keeps the output layer exactly as trained.
    output = set(output_layer_names(model))
    return Mask({name: t for name, t in mask.items() if name not in output})


def unit_norms(model: nn.Module) -> dict[str, torch.Tensor]:
    """For each channel group, the L2 norm of each unit's incoming weights (a Linear row, a
    Conv filter; for a residual stream, its rows in every layer that adds into it)."""
    return {group: rows.norm(dim=1)
            for group, rows in incoming_weights(ScoreContext(model, hidden_weights(model))).items()}


MASKS = {"weight": weight_mask, "unit": unit_mask}


def sparsity_of(mask: Mask, names: Sequence[str]) -> float:
    """The fraction of the named parameters' entries that the mask zeroes."""
    total = sum(mask[n].numel() for n in names)
    return sum(int((~mask[n]).sum()) for n in names) / total


def sweep_identity(run: TrainRun, ks: Sequence[float], step: str) -> dict[str, Any]:
    identity: dict[str, Any] = {"train": run.run.name}
    if step != "best":
        identity["step"] = step
    if tuple(ks) != DEFAULT_KS:
        identity["ks"] = list(ks)
    return identity


def normalise_ks(ks: Sequence[float]) -> list[float]:
    """Sorted, without repeats; each k (a number, or its text) must lie in [0, 1)."""
    try:
        values = sorted({float(k) for k in ks})
    except (TypeError, ValueError):
        raise TicketlabError(f"sparsities k must be numbers, got {list(ks)}") from None
    if not values:
        raise TicketlabError("a sweep needs at least one sparsity k")
    bad = [k for k in values if not 0 <= k < 1]
    if bad:
        raise TicketlabError(f"sparsity k must be in [0, 1), got {', '.join(f'{k:g}' for k in bad)}")
    return values


def sweep(run: TrainRun, ks: Sequence[float] = DEFAULT_KS, *, step: str = "best",
          runtime: Runtime = Runtime()) -> SweepResult:
    """Prune the trained weights at `step` by weight and by unit magnitude for each k, and
    evaluate each pruned network on the test and validation sets; or return the finished
    sweep with the same inputs. Writes sweep.csv and histograms.json (the report draws them)."""
    ks = normalise_ks(ks)
    if not run.run.done:
        raise TicketlabError(f"training run {run.run.name} has not finished; train it before sweeping")
    result = SweepResult(SweepResult.run_for(sweep_identity(run, ks, step), runtime.runs_dir))

    def prepare() -> tuple[dict[str, Any], tuple[dict[str, torch.Tensor], Dataset, nn.Module, torch.device]]:
        trained = run.state_dict(step)
        device = apply_runtime(runtime)
        dataset = run.dataset(runtime, device)
        model = init_model(run.model_config, dataset, run.training.seed).to(device)
        return {"train": run.run.name, "train_path": str(run.path), "step": step, "ks": ks}, \
            (trained, dataset, model, device)

    result.produce(runtime.force, prepare,
                   lambda prepared: _sweep(result.run, run, ks, step, *prepared, kernels=runtime.kernels))
    return result


def _sweep(out: Run, run: TrainRun, ks: list[float], step: str, trained: dict[str, torch.Tensor], dataset: Dataset,
           model: nn.Module, device: torch.device, kernels: str = "dense") -> dict[str, Any]:
    """Prune and evaluate for each k and method (the pruned network on `kernels`); write the table
    and the histograms; the summary."""
    started = time.perf_counter()
    model.load_state_dict(trained)
    (test_loss, test_acc), (val_loss, val_acc) = evaluate(model, dataset.test), evaluate(model, dataset.val)
    names = hidden_weights(model)
    histograms = Histograms(model, names)
    rows = []
    for k in ks:
        for method in METHODS:
            # load_state_dict copies, so `trained` stays unpruned for the next mask.
            model.load_state_dict(trained)
            mask = MASKS[method](model, k)
            mask.apply(model)
            pruned = evaluated_copy(model, mask, kernels)
            (t_loss, t_acc), (v_loss, v_acc) = evaluate(pruned, dataset.test), evaluate(pruned, dataset.val)
            rows.append({"k": k, "method": method, "sparsity": sparsity_of(mask, names),
                         "test_loss": t_loss, "test_acc": t_acc, "val_loss": v_loss, "val_acc": v_acc})
            histograms.count(model, method, k)
    atomic_write_text(out.file(paths.SWEEP_TABLE), csv_text(rows, COLUMNS))
    atomic_write_json(out.file(paths.SWEEP_HISTOGRAMS), histograms.data())
    return {"train": run.run.name, "step": step, "ks": ks, "dense_test_loss": test_loss,
            "dense_test_acc": test_acc, "dense_val_loss": val_loss, "dense_val_acc": val_acc,
            "hidden_weights": sum(dict(model.named_parameters())[n].numel() for n in names),
            "seconds": round(time.perf_counter() - started, 3), "device": str(device)}


class Histograms:
    """Per-k histograms of what survives, measured on the pruned network: nonzero |w| per layer
    after weight pruning, and nonzero unit norms per group after unit pruning (a later layer's
    norms shrink as the input columns of pruned units are zeroed)."""

    def __init__(self, dense: nn.Module, names: Sequence[str]):
        self.names = names
        # The dense network's x ranges, fixed for every k, keep histograms comparable as pruning cuts in.
        params = dict(dense.named_parameters())
        self.ranges = {
            "weight": {n: (0.0, float(params[n].detach().abs().max())) for n in names},
            "unit": {g: (0.0, float(t.max())) for g, t in unit_norms(dense).items()},
        }
        self.counts: dict[str, dict[str, dict[str, list[int]]]] = {method: {} for method in METHODS}

    def count(self, model: nn.Module, method: str, k: float) -> None:
        if method == "weight":
            params = dict(model.named_parameters())
            values = {n: params[n].detach()[params[n] != 0].abs() for n in self.names}
        else:
            values = {g: t[t > 0] for g, t in unit_norms(model).items()}
        self.counts[method][f"{k:g}"] = {
            name: np.histogram(v.cpu().numpy(), bins=HISTOGRAM_BINS, range=self.ranges[method][name])[0].tolist()
            for name, v in values.items()}

    def data(self) -> dict[str, Any]:
        """What histograms.json holds: per method, each layer's (or group's) x range, split into
        `bins` equal bins, and per k the count of surviving values in each bin."""
        return {"bins": HISTOGRAM_BINS, "ranges": self.ranges, "counts": self.counts,
                "values": {"weight": "|w| of the nonzero weights", "unit": "L2 norm of each unit's incoming weights"}}
