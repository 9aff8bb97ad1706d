"""The EEE 198 thesis's evaluator, re-implemented faithfully and slow on purpose.

For every candidate mask the thesis reloaded the checkpoint from disk into the network,
multiplied the mask into the weights in place, and scored the network in eval mode on a
fixed subset of training images, in batches of 256 (its data loaders' size). The fast
evaluator (search.evaluators) must return exactly, bit for bit, what this returns;
tests/test_search_evaluator.py checks it and bench/search_evaluator.py times both.

`objective` fixes how logits become a score, for both: accuracy, or minus the mean
cross-entropy when the metric is "loss", so that higher is better either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import TicketlabError
from ticketlab.sparsity.mask import Mask
from ticketlab.store import load_checkpoint

SCORE_BATCH = 256
METRICS = ("accuracy", "loss")


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise TicketlabError(f"unknown search metric {metric!r}; expected accuracy or loss")


def objective(outputs: Iterable[tuple[torch.Tensor, torch.Tensor]], metric: str) -> float:
    """The score of (logits, labels) batches: accuracy in [0, 1], or -mean cross-entropy."""
    total, count = 0.0, 0
    for logits, y in outputs:
        count += len(y)
        if metric == "accuracy":
            total += int((logits.argmax(1) == y).sum())
        else:
            total -= float(F.cross_entropy(logits, y, reduction="sum"))
    return total / count


def reference_score(checkpoint_path: str | Path, model_builder: Callable[[], nn.Module], mask: Mask,
                    x: torch.Tensor, y: torch.Tensor, metric: str = "accuracy") -> float:
    """Load the checkpoint from disk into a model from `model_builder`, apply `mask` in place,
    and score the masked network on (x, y) in eval mode, SCORE_BATCH images at a time.

    The checkpoint is a state_dict or a training checkpoint holding one under "model".
    The builder's weights are replaced, so it may build the model on the meta device.
    """
    check_metric(metric)
    state = load_checkpoint(Path(checkpoint_path))
    if isinstance(state.get("model"), dict):
        state = state["model"]
    model = model_builder()
    model.load_state_dict(state, assign=True)
    model.to(x.device)
    mask.apply(model)
    model.eval()
    with torch.inference_mode():
        return objective(((model(xb), yb) for xb, yb in zip(x.split(SCORE_BATCH), y.split(SCORE_BATCH))), metric)
