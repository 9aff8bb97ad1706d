import math

import pytest
import torch
from torch import nn

from ticketlab.config import ModelConfig, TicketlabError
from ticketlab.models import build_model
from ticketlab.search.space import unit_space, weight_space
from ticketlab.sparsity.mask import Mask, prunable_names, unit_mask_to_mask


def zoo(name: str, shape=(1, 28, 28), bias: bool | None = None) -> nn.Module:
    return build_model(ModelConfig(name=name, bias=bias), shape, 10, generator=torch.Generator().manual_seed(0))


def test_the_thesis_spaces_have_its_sizes():
    lenet = zoo("lenet300_100", bias=False)
    weights = weight_space(lenet)
    assert weights.size == 266_200
    assert [(layer.name, layer.size) for layer in weights.layers] == [
        ("fc1.weight", 235_200), ("fc2.weight", 30_000), ("fc3.weight", 1_000)]
    filters = unit_space(zoo("basiccnn"))
    assert filters.size == 960
    assert [(name, s.stop - s.start) for name, s in filters.layers] == [
        ("conv1", 64), ("conv2", 128), ("conv3", 256), ("conv4", 512)]
    neurons = unit_space(lenet)
    assert neurons.size == 400 and [layer.size for layer in neurons.layers] == [300, 100]


@pytest.mark.parametrize("name, shape", [("lenet300_100", (1, 28, 28)), ("basiccnn", (1, 28, 28)),
                                         ("resnet20", (3, 32, 32))])
def test_units_expand_like_unit_mask_to_mask_and_project_back(name, shape):
    model = zoo(name, shape)
    space = unit_space(model)
    for seed in range(3):
        keep = space.random(0.6, torch.Generator().manual_seed(seed))
        mask = space.to_mask(keep)
        assert mask == unit_mask_to_mask(model, space.split(keep))
        assert torch.equal(space.from_mask(mask), keep)
    mask.check_fits(model)


def test_weights_round_trip_and_the_mask_does_not_follow_the_vector():
    model = zoo("lenet300_100", bias=False)
    space = weight_space(model)
    keep = space.random(0.9, torch.Generator().manual_seed(0))
    mask = space.to_mask(keep)
    assert list(mask) == prunable_names(model) and mask["fc2.weight"].shape == (100, 300)
    assert torch.equal(space.from_mask(mask), keep)
    assert mask.kept() == int(keep.sum())
    before = mask["fc1.weight"].clone()
    keep[:1000] = ~keep[:1000]
    assert torch.equal(mask["fc1.weight"], before)


def test_a_criterions_mask_gives_the_units_it_keeps():
    model = zoo("basiccnn")
    space = unit_space(model)
    keep = space.random(0.5, torch.Generator().manual_seed(4))
    structured = space.to_mask(keep)
    # A criterion may mask the weights only: its projection keeps the same filters.
    weights_only = Mask({name: structured[name] for name in prunable_names(model)})
    assert torch.equal(space.from_mask(weights_only), keep)


@pytest.mark.parametrize("space_of", [lambda m: unit_space(m), lambda m: weight_space(m)])
def test_random_prunes_exactly_and_respects_layer_floors(space_of):
    space = space_of(zoo("basiccnn"))
    for sparsity, layer_min in [(0.9, 0.0), (0.9, 0.05), (0.5, 0.3), (0.0, 0.0)]:
        floors = space.layer_floor(layer_min)
        assert floors == [max(1, math.ceil(layer_min * layer.size)) for layer in space.layers]
        for seed in range(3):
            keep = space.random(sparsity, torch.Generator().manual_seed(seed), layer_min)
            assert keep.dtype == torch.bool and keep.shape == (space.size,)
            assert int((~keep).sum()) == round(space.size * sparsity)
            assert all(int(keep[layer.slice].sum()) >= floor for layer, floor in zip(space.layers, floors))
    one = space.random(0.7, torch.Generator().manual_seed(9), 0.1)
    assert torch.equal(one, space.random(0.7, torch.Generator().manual_seed(9), 0.1))


def test_floors_keep_a_unit_per_layer_even_at_extreme_sparsity():
    space = unit_space(zoo("basiccnn"))
    keep = space.random(1 - 4 / 960, torch.Generator().manual_seed(0))
    assert [int(keep[layer.slice].sum()) for layer in space.layers] == [1, 1, 1, 1]


def test_bad_requests_are_clear_errors():
    space = unit_space(zoo("basiccnn"))
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(TicketlabError, match="fewer than the"):
        space.random(0.95, generator, layer_min=0.5)
    with pytest.raises(TicketlabError, match="in \\[0, 1\\)"):
        space.random(1.0, generator)
    with pytest.raises(TicketlabError, match="layer_min"):
        space.layer_floor(1.5)
    with pytest.raises(TicketlabError, match="shape \\(960,\\)"):
        space.to_mask(torch.ones(959, dtype=torch.bool))
    with pytest.raises(TicketlabError, match="no parameter"):
        weight_space(zoo("basiccnn"), ["conv9.weight"])
    with pytest.raises(TicketlabError, match="does not cover"):
        weight_space(zoo("basiccnn")).from_mask(Mask({"conv1.weight": torch.ones(64, 1, 3, 3, dtype=torch.bool)}))
    with pytest.raises(TicketlabError, match="channel groups"):
        unit_space(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))


@pytest.mark.parametrize("name, shape", [("basiccnn", (1, 28, 28)), ("lenet300_100", (1, 28, 28)),
                                         ("conv2", (3, 32, 32)), ("resnet20", (3, 32, 32))])
def test_the_soft_mask_of_ones_and_zeros_is_the_mask_and_carries_gradients(name, shape):
    model = build_model(ModelConfig(name=name), shape, 10)
    for space in (unit_space(model), weight_space(model)):
        keep = space.random(0.7, torch.Generator().manual_seed(0))
        mask, soft = space.to_mask(keep), space.to_soft_mask(keep.float())
        assert set(mask) == set(soft)
        assert all(torch.equal(mask[n].float(), soft[n]) for n in mask)
        values = torch.rand(space.size, requires_grad=True)
        sum(t.sum() for t in space.to_soft_mask(values).values()).backward()
        assert (values.grad > 0).all()  # every unit's value reaches the loss
    with pytest.raises(TicketlabError, match=r"a vector of this space has shape \(960,\)"):
        unit_space(build_model(ModelConfig(name="basiccnn"), (1, 28, 28), 10)).to_soft_mask(torch.ones(3))
