"""Hyperparameters as frozen dataclasses, and the stable hash that names result folders.

One dataclass per concern. The hash of a config covers only the fields that differ from
their defaults, so adding a field with a neutral default keeps every old run's name valid
(the OpenLTH habit). Every field carries a help text; the CLI is generated from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


class TicketlabError(Exception):
    """A user-facing error: its message is one line saying what was wrong and what is expected."""


def hp(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and a help text (shown by --help)."""
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass(frozen=True)
class DataConfig:
    name: str = hp("mnist5k", "dataset: mnist, fashion, cifar10, mnist5k, digits")
    val_size: int | None = hp(None, "images held out of the training set for validation (default: per dataset)")
    split_seed: int = hp(0, "seed of the train/validation split")
    train_size: int | None = hp(None, "use only this many training images (after the validation split)")
    augment: bool | None = hp(None, "random crop + flip (default: on for cifar10 only)")


@dataclass(frozen=True)
class ModelConfig:
    name: str = hp("lenet300_100", "model from the zoo (see `ticketlab models`)")
    bias: bool | None = hp(None, "give Linear/Conv layers biases (default: per model)")
    shortcut: str = hp("A", "ResNet shortcut: A (zero-padded identity) or B (1x1 conv)")
    init: str | None = hp(None, "weight init: kaiming_normal, kaiming_uniform, xavier_normal, torch (default: per model)")


@dataclass(frozen=True)
class TrainConfig:
    steps: str = hp("10ep", "training length: 160ep, 50000it, 2ep100it")
    batch_size: int = hp(60, "minibatch size")
    optimizer: str = hp("adam", "sgd, adam or adadelta")
    lr: float = hp(1.2e-3, "learning rate")
    momentum: float = hp(0.0, "SGD momentum")
    nesterov: bool = hp(False, "Nesterov momentum (SGD)")
    weight_decay: float = hp(0.0, "weight decay (decoupled from the loss, as the optimiser applies it)")
    l1: float = hp(0.0, "L1 penalty on prunable weights, added to the loss")
    l2: float = hp(0.0, "L2 penalty on prunable weights, added to the loss")
    bn_l1: float = hp(0.0, "network slimming: L1 subgradient s·sign(γ) added to every BatchNorm scale's gradient")
    schedule: str = hp("constant", "LR schedule: constant, multistep, cosine")
    milestones: str = hp("", "multistep: steps where LR is multiplied by gamma, e.g. 80ep,120ep")
    gamma: float = hp(0.1, "multistep LR factor")
    warmup: str = hp("0it", "linear LR warmup length, e.g. 500it")
    seed: int = hp(0, "seed of the initialisation, data order and augmentation")
    save_at: str = hp("0it", "steps to keep checkpoints of, for rewinding: 0it,1ep,500it")
    select_by: str = hp("val_loss", "metric that picks the best step: val_loss or val_acc")
    eval_every: str = hp("", "also evaluate every this many steps, e.g. 100it (default: at epoch ends only)")
    deterministic: bool = hp(False, "force deterministic kernels (slower on GPU; CPU is already deterministic)")


@dataclass(frozen=True)
class PruneConfig:
    criterion: str = hp("magnitude", "pruning criterion (see `ticketlab criteria`)")
    sparsity: float = hp(0.8, "fraction of the prunable weights (or units) to prune, in [0, 1)")
    scope: str | None = hp(None, "rank across all layers (global) or within each layer (layerwise) (default: global "
                                 "for single weights; layerwise for units, as Torch-Pruning does, since one global "
                                 "ranking of units can empty whole layers)")
    structured: bool = hp(False, "prune whole units (neurons, filters, channels) instead of single weights")
    at: str = hp("final", "checkpoint the scores are taken from: a saved step (0it, 3ep), best or final")
    compare: str = hp("0it", "checkpoint that criteria comparing two steps use (magnitude_sign, magnitude_increase)")
    output_sparsity: float | None = hp(None, "prune the output layer at this rate on its own (0: keep it whole; "
                                             "default: like the other layers)")
    empty_layer: str = hp("keep", "when a layer would be emptied: keep its best unit (keep) or fail (error)")
    parameters: str = hp("", "comma-separated names or patterns of the parameters to prune "
                             "(default: every Linear/Conv weight)")
    score_batches: int = hp(1, "validation batches that data-driven criteria (snip, grasp) score on")
    score_batch_size: int = hp(64, "size of those batches")
    seed: int = hp(0, "seed of random criteria")
    round_to: int = hp(1, "with --structured: keep a multiple of N units in each channel group, rounding up "
                          "(Torch-Pruning's round_to; kernels run thin layers slowly, and best at multiples of 8 or 16)")


@dataclass(frozen=True)
class LotteryConfig:
    levels: int = hp(5, "pruning levels after the dense level 0 (more can be asked for later)")
    rate: float = hp(0.2, "fraction of the remaining weights pruned at each level")
    output_rate: float | None = hp(None, "rate for the output layer on its own (lottery-ticket paper: 0.1; "
                                         "default: like the other layers)")
    scope: str = hp("global", "rank weights across all layers (global) or within each layer (layerwise)")
    criterion: str = hp("magnitude", "criterion that picks the weights to prune at each level")
    rewind: str = hp("0it", "step the surviving weights are reset to: 0it (init) or later (500it, 3ep)")


@dataclass(frozen=True)
class SearchConfig:
    method: str = hp("anneal", "search method: anneal, random, greedy, reinforce, edgepopup or supermask")
    granularity: str = hp("weight", "what a mask keeps or prunes: weight (single weights) or filter (units)")
    sparsity: float = hp(0.8, "fraction of the searchable units pruned, in (0, 1)")
    at: str = hp("0it", "checkpoint whose masked network is scored: 0it (init), 500it, 3ep, best, final")
    budget: int = hp(2000, "evaluations the search may spend (of the objective's images; edgepopup and supermask "
                           "count a training pass over them as 3)")
    mode: str = hp("default", "default (improved) or thesis (the EEE 198 constants and acceptance rule; reinforce: "
                              "the earlier attempt's deterministic agent, a flawed method reproduced)")
    metric: str = hp("accuracy", "objective: accuracy or loss of the masked network on the search subset")
    val_size: int | None = hp(1024, "validation images the objective is computed on: the first N of validation "
                                    "(default: 1024, or all of validation where it holds fewer)")
    start: str | None = hp(None, "initial mask: random; a criterion's mask (magnitude, snip, ...) at the searched "
                                 "checkpoint, or at another as CRITERION@STEP (magnitude_sign@final); or a finished "
                                 "prune or search run's mask (its name or directory). Default: magnitude-sign's mask "
                                 "of the trained weights (magnitude_sign@final; per filter "
                                 "magnitude_sign_units@final); "
                                 "random in thesis mode")
    start_scope: str = hp("global", "how a criterion's start mask ranks: across all layers (global) or within each "
                                    "layer (layerwise, as a prune of units ranks by default)")
    neighbourhood: str | None = hp(None, "schedule of h (units swapped per move): sawtooth (thesis), geometric, or "
                                         "adaptive (h follows the share of moves that improve; single swaps first "
                                         "from a start mask other than random). Default: adaptive; sawtooth in "
                                         "thesis mode")
    layer_min: float = hp(0.0, "fraction of each layer's units every mask keeps (0: none; 1 unit is always kept)")
    t0: float | None = hp(None, "initial temperature (default: thesis constant, or calibrated from random moves)")
    cooling: float | None = hp(None, "temperature factor per step (default: per mode)")
    restarts: int = hp(0, "restarts from the best mask so far (default mode)")
    tabu: int | None = hp(None, "masks remembered to avoid revisiting (default: per mode)")
    train_steps: int = hp(0, "train each candidate this many iterations before scoring it (0: score as is)")
    exact: bool = hp(True, "score as the thesis evaluator would (accuracy: exactly; loss: bit for bit); "
                           "--no-exact also lets MLP searches on the loss update activations incrementally "
                           "(faster; the loss then within float rounding of the thesis evaluator's)")
    score_lr: float | None = hp(None, "edgepopup, supermask: SGD learning rate of the mask scores (default: 0.1 "
                                      "for edgepopup, 10 for supermask)")
    policy_lr: float = hp(0.01, "reinforce: Adam learning rate of the policy")
    entropy: float = hp(0.001, "reinforce: weight of the entropy bonus (mean entropy of the softmax of each draw)")
    baseline_decay: float = hp(0.9, "reinforce: factor per episode of the moving-average reward baseline")
    episodes: int = hp(8, "reinforce: episodes (evaluations) per policy update (thesis mode: 1)")
    hidden: int | None = hp(None, "reinforce: width of the policy's hidden layers (default 64; thesis mode 512)")
    reward_sign: int = hp(1, "reinforce thesis mode: sign of the reward in its update (-1: the inverted reward "
                             "the earlier attempt needed)")
    seed: int = hp(0, "seed of the search")


@dataclass(frozen=True)
class MaskMethod:
    """A named way to make a mask, for comparisons: a pruning criterion, a search, or IMP (a lottery)."""

    name: str  # as a table shows it, e.g. "SA k=init"
    config: PruneConfig | SearchConfig | LotteryConfig  # its sparsity (IMP: its rate) is set by each compared sparsity


C = TypeVar("C")


def non_default(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass whose values differ from the defaults."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if getattr(config, f.name) != f.default
    }


def sha256_file(path: Any) -> str:
    """The SHA-256 of a file's content, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """A hash of JSON-able data that does not depend on dict order, process or platform."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def from_dict(cls: type[C], values: dict[str, Any], where: str) -> C:
    """Build a config dataclass from a dict, refusing unknown keys with a clear message."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise TicketlabError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}"
        )
    types = typing.get_type_hints(cls)
    return cls(**{key: coerce(value, types[key], f"{where}.{key}") for key, value in values.items()})


KERNELS = ("dense", "sparse", "auto")  # Runtime.kernels (sparsity.kernels)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """What ticketlab keeps to save time (parsed data, built kernels): cache_dir, else
    $TICKETLAB_CACHE, else ~/.cache/ticketlab."""
    return Path(cache_dir if cache_dir is not None else os.environ.get("TICKETLAB_CACHE") or "~/.cache/ticketlab").expanduser()


def check_kernels(kernels: str) -> None:
    if kernels not in KERNELS:
        raise TicketlabError(f"unknown kernels {kernels!r}: expected one of {', '.join(KERNELS)}")


@dataclass(frozen=True)
class Runtime:
    """Where and how to run: nothing here changes results (threads and kernels change the order of
    float sums only), so none of it is hashed."""

    runs_dir: str | None = hp(None, "root of run directories (default: $TICKETLAB_RUNS or ./runs)")
    data_dir: str | None = hp(None, "directory with dataset files (default: $TICKETLAB_DATA)")
    cache_dir: str | None = hp(None, "where downloads and parsed arrays are kept (default: $TICKETLAB_CACHE or "
                                     "~/.cache/ticketlab; `ticketlab cache` lists and clears it)")
    device: str = hp("auto", "auto, cpu or cuda")
    threads: int = hp(1, "CPU threads for PyTorch (1 never collapses on a busy 2-core machine; see BENCHMARKS.md)")
    kernels: str = hp("auto", "masked Linear layers trained on dense or sparse (CSR) kernels: dense, sparse, or auto "
                              "(sparse where measured faster: large layers keeping at most a fifth of their weights, "
                              "on the CPU); they change the order of float sums only")
    force: bool = hp(False, "redo the run even if it is finished")
    progress: bool = hp(True, "show progress bars")


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert text (from the command line or YAML) to a field's declared type."""
    args = typing.get_args(annotation)
    if value is None and type(None) in args:
        return None
    target = next((a for a in args if a is not type(None)), annotation) if args else annotation
    if isinstance(value, target) and not (target is int and isinstance(value, bool)):
        return _finite(value, value, target, where)
    text = str(value).strip()
    try:
        if target is bool:
            lowered = text.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise ValueError
        if target is int and isinstance(value, float) and value.is_integer():
            return int(value)
        converted = target(text)
    except (TypeError, ValueError):
        raise TicketlabError(f"{where}: {value!r} is not a valid {target.__name__}; expected e.g. "
                             f"{EXAMPLES.get(target, target.__name__)}") from None
    return _finite(converted, value, target, where)


def _finite(converted: Any, value: Any, target: type, where: str) -> Any:
    if target is float and not math.isfinite(converted):
        raise TicketlabError(f"{where}: {value!r} is not a finite number; expected e.g. {EXAMPLES[float]}")
    return converted


EXAMPLES = {int: "3", float: "0.5 or 1e-3", bool: "true or false"}
