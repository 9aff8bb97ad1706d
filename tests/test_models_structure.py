"""Channel groups: they partition every hidden layer's units, and zeroing a unit's producers
silences exactly that unit wherever it is read."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ticketlab.config import ModelConfig
from ticketlab.models import ChannelGroup, Slice, ZooModel, build_model, model_names
from model_helpers import trained_looking

torch.set_num_threads(1)

CASES = [(name, {}) for name in model_names()] + [
    ("resnet20", {"shortcut": "B"}),
    ("resnet20", {"shortcut": "B", "bias": True}),
    ("resnet20", {"bias": True}),
    ("vgg11", {"bias": True}),
    ("mlp_1000", {"bias": True}),
]
SHAPE = (3, 32, 32)


def case_id(case) -> str:
    name, cfg = case
    return "-".join([name, *(f"{k}={v}" for k, v in cfg.items())])


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def model(request) -> ZooModel:
    name, cfg = request.param
    model = build_model(ModelConfig(name=name, **cfg), SHAPE, 10, generator=torch.Generator().manual_seed(0))
    trained_looking(model)
    return model.eval()


def part(tensor: torch.Tensor, s: Slice, unit: int) -> torch.Tensor:
    index = s.index(unit)
    assert index.stop <= tensor.shape[s.dim], f"{s} is out of range for unit {unit}"
    return tensor.narrow(s.dim, index.start, index.stop - index.start)


def coverage(model: nn.Module, groups: list[ChannelGroup], side: str) -> dict[str, torch.Tensor]:
    """How many times each index of each tensor is claimed, along dim 0 (producers) or 1 (consumers)."""
    state = model.state_dict()
    counts: dict[str, torch.Tensor] = {}
    for group in groups:
        for s in getattr(group, side):
            assert s.dim == (0 if side == "producers" else 1)
            hits = counts.setdefault(s.param, torch.zeros(state[s.param].shape[s.dim], dtype=torch.long))
            for unit in range(group.size):
                part(hits, Slice(s.param, 0, s.offset, s.block), unit).add_(1)
    return counts


def test_groups_partition_every_hidden_layer(model):
    groups = model.channel_groups()
    assert len({g.name for g in groups}) == len(groups)
    assert all(g.size > 0 and g.producers and g.consumers for g in groups)
    state = model.state_dict()

    produced = coverage(model, groups, "producers")
    for name, module in model.named_modules():
        if name == model.output_layer:
            assert not any(key.startswith(f"{name}.") for key in produced)
        elif isinstance(module, (nn.Linear, nn.Conv2d, nn.BatchNorm2d)):
            for key in module.state_dict():
                if state[f"{name}.{key}"].dim() > 0:
                    assert torch.all(produced[f"{name}.{key}"] == 1), f"{name}.{key}"

    # Every layer reads only grouped channels, except the first, which reads the image, and depthwise
    # convolutions, whose channel j is the unit they read (they produce it).
    consumed = coverage(model, groups, "consumers")
    first, *rest = model.prunable_parameters()
    assert first not in consumed
    modules = dict(model.named_modules())
    for param in rest:
        layer = modules[param.rpartition(".")[0]]
        if getattr(layer, "groups", 1) > 1:
            assert param not in consumed and torch.all(produced[param] == 1), param
        else:
            assert torch.all(consumed[param] == 1), param


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_pre_hook(lambda _, args, name=name: inputs.__setitem__(name, args[0].clone()))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return inputs


def test_zeroing_a_units_producers_silences_it_exactly(model):
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    before = layer_inputs(model, x)
    state = model.state_dict()

    def read(inputs, s, unit):
        return part(inputs[s.param.removesuffix(".weight")], s, unit)

    for group in model.channel_groups():
        # A unit whose every reader sees it nonzero, so that silence is the zeroing's doing.
        unit = next(
            (u for u in range(group.size) if all(read(before, s, u).any() for s in group.consumers)),
            None,
        )
        assert unit is not None, f"{group.name}: every unit is already silent somewhere"
        saved = [part(state[s.param], s, unit).clone() for s in group.producers]
        with torch.no_grad():
            for s in group.producers:
                part(state[s.param], s, unit).zero_()
            after = layer_inputs(model, x)
            for s, value in zip(group.producers, saved):
                part(state[s.param], s, unit).copy_(value)
        for s in group.consumers:
            assert torch.all(read(after, s, unit) == 0), f"{group.name} unit {unit} still reaches {s.param}"
