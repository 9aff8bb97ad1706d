"""Surgery: the shrunk network is smaller, plain, and computes what the masked one did."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ticketlab.config import ModelConfig, TicketlabError
from ticketlab.models import ZooModel, build_model
from ticketlab.models.resnet import ZeroPadShortcut
from ticketlab.sparsity.mask import unit_mask_to_mask
from ticketlab.structure.surgery import check_equivalent, count_macs, count_parameters, shrink
from model_helpers import trained_looking

torch.set_num_threads(1)

CASES = [
    ("lenet300_100", {}, (1, 28, 28)),
    ("mlp_1000", {}, (1, 28, 28)),
    ("conv2", {}, (1, 8, 8)),
    ("conv4", {}, (3, 8, 8)),
    ("basiccnn", {}, (1, 28, 28)),
    ("vgg11", {}, (1, 8, 8)),
    ("resnet20", {"shortcut": "A"}, (3, 8, 8)),
    ("resnet20", {"shortcut": "A", "bias": True}, (3, 8, 8)),
    ("resnet20", {"shortcut": "B"}, (3, 8, 8)),
]


def case_id(case) -> str:
    name, cfg, shape = case
    return "-".join([name, *(f"{k}={v}" for k, v in cfg.items()), "x".join(map(str, shape))])


def make(name: str, cfg: dict, shape: tuple[int, int, int], seed: int = 0) -> ZooModel:
    model = build_model(ModelConfig(name=name, **cfg), shape, 10, generator=torch.Generator().manual_seed(seed))
    trained_looking(model, seed)
    return model


def half_mask(model: ZooModel, seed: int = 0) -> dict[str, torch.Tensor]:
    """Keep a random half (at least one) of every group's units."""
    generator = torch.Generator().manual_seed(seed)
    units = {}
    for group in model.channel_groups():
        keep = torch.zeros(group.size, dtype=torch.bool)
        keep[torch.randperm(group.size, generator=generator)[:max(1, group.size // 2)]] = True
        units[group.name] = keep
    return units


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def shrunk(request):
    name, cfg, shape = request.param
    model = make(name, cfg, shape)
    units = half_mask(model)
    return request.param, model, units, shrink(model, units)


def test_shrunk_model_computes_what_the_masked_one_did(shrunk):
    (_, _, shape), model, units, small = shrunk
    masked = make(*shrunk[0])
    unit_mask_to_mask(masked, units).apply(masked)
    x = torch.randn((5, *shape), generator=torch.Generator().manual_seed(9))
    assert check_equivalent(masked, small, x) <= 1e-5


def test_shrunk_model_is_smaller(shrunk):
    (_, _, shape), model, _, small = shrunk
    assert count_parameters(small) < count_parameters(model)
    assert count_macs(small, shape) < count_macs(model, shape)


def test_shrunk_model_is_plain_and_consistent(shrunk):
    _, model, _, small = shrunk
    assert small.state_dict().keys() == model.state_dict().keys()
    for module in small.modules():
        assert type(module).__module__.startswith(("torch.nn.", "ticketlab.models."))
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not hasattr(module, "parametrizations")
        if isinstance(module, nn.Linear):
            assert module.weight.shape == (module.out_features, module.in_features)
        elif isinstance(module, nn.Conv2d):
            assert module.weight.shape[:2] == (module.out_channels, module.in_channels)
        elif isinstance(module, nn.BatchNorm2d):
            assert module.weight.shape == module.running_var.shape == (module.num_features,)
            assert module.num_batches_tracked.item() == 7


def test_state_dict_loads_into_a_freshly_built_small_model(shrunk):
    case, _, units, small = shrunk
    fresh = shrink(make(*case, seed=5), units)
    fresh.load_state_dict(small.state_dict())
    x = torch.randn((2, *case[2]), generator=torch.Generator().manual_seed(3))
    assert check_equivalent(small, fresh, x, atol=0.0) == 0.0


def test_option_a_padding_shrinks_to_the_kept_padded_channels():
    model = make("resnet20", {}, (3, 8, 8))
    units = half_mask(model)
    units["stage2.stream.pad_lo"] = torch.tensor([True, False, True, False, False, False, False, False])
    units["stage3.stream.pad_hi"] = torch.zeros(16, dtype=torch.bool)  # one side may go entirely
    small = shrink(model, units)
    pads = [m for m in small.modules() if isinstance(m, ZeroPadShortcut)]
    assert [(p.lo, p.hi) for p in pads] == [(2, 4), (8, 0)]


def test_count_macs_and_parameters_of_lenet():
    model = make("lenet300_100", {}, (1, 28, 28))
    assert count_macs(model, (1, 28, 28)) == 784 * 300 + 300 * 100 + 100 * 10
    assert count_parameters(model) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    conv = make("conv2", {}, (1, 8, 8))
    assert count_macs(conv, (1, 8, 8)) == 64 * 64 * 9 + 64 * 64 * 64 * 9 + 64 * 16 * 256 + 256 * 256 + 256 * 10


def test_emptying_a_layer_names_the_group():
    model = make("conv4", {}, (3, 8, 8))
    units = half_mask(model)
    units["features.conv2"] = torch.zeros(64, dtype=torch.bool)
    with pytest.raises(TicketlabError, match="features.conv2 keeps no units"):
        shrink(model, units)


def test_emptying_a_residual_stream_names_the_group():
    model = make("resnet20", {"shortcut": "B"}, (3, 8, 8))
    with pytest.raises(TicketlabError, match="stage2.stream keeps no units"):
        shrink(model, {"stage2.stream": torch.zeros(32, dtype=torch.bool)})


def test_a_mask_for_another_model_is_refused():
    model = make("lenet300_100", {}, (1, 28, 28))
    with pytest.raises(TicketlabError, match="unknown channel group 'conv1'"):
        shrink(model, {"conv1": torch.ones(64, dtype=torch.bool)})
    with pytest.raises(TicketlabError, match=r"fc1 has \(64,\) flags; expected \(300,\)"):
        shrink(model, {"fc1": torch.ones(64, dtype=torch.bool)})


def test_a_model_that_computes_something_else_fails_the_check():
    model = make("lenet300_100", {}, (1, 28, 28))
    units = half_mask(model)
    small = shrink(model, units)
    unit_mask_to_mask(model, units).apply(model)
    with torch.no_grad():
        small.fc3.bias += 1e-3
    with pytest.raises(TicketlabError, match=r"differs from the masked one by 0.001 "):
        check_equivalent(model, small, torch.randn(4, 1, 28, 28))


def test_shrink_keeps_everything_when_no_group_is_named():
    model = make("vgg11", {}, (1, 8, 8))
    small = shrink(model, {})
    assert count_parameters(small) == count_parameters(model)
    assert math.isclose(count_macs(small, (1, 8, 8)), count_macs(model, (1, 8, 8)))
