"""The layer chain read from a model's graph, and the search evaluators' fast paths built on it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_search_evaluator import move_sequence
from ticketlab import trace
from ticketlab.config import ModelConfig
from ticketlab.models import build_model
from ticketlab.models.chain import ChainStep, layer_chain
from ticketlab.models.mlp import MLP
from ticketlab.search.evaluators import (DeltaEvaluator, ForwardEvaluator, IncrementalEvaluator, LiveEvaluator,
                                        make_evaluator)
from ticketlab.search.reference import reference_score
from ticketlab.search.space import unit_space, weight_space


class ConvBnRelu(nn.Module):
    """A user's chain in the common order: conv, BatchNorm, ReLU; then nn.Flatten into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6)
        self.c2, self.n2 = nn.Conv2d(6, 8, 3, stride=2), nn.BatchNorm2d(8)
        self.flat, self.head = nn.Flatten(), nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.n1(self.c1(x)))
        x = nn.functional.relu(self.n2(self.c2(x)))
        return self.head(self.flat(x))


class ConvMLPHead(ConvBnRelu):
    """The same convolutions under a two-layer head: a Linear reading another Linear's units."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.out = nn.Linear(8 * 4 * 4, 12), nn.Linear(12, 10)

    def forward(self, x):
        return self.out(F.relu(super().forward(x)))


class Residual(ConvBnRelu):
    def forward(self, x):
        x = torch.relu(self.n1(self.c1(x)))
        return self.head(self.flat(F.relu(self.n2(self.c2(x))) + 1))


class Pooled(ConvBnRelu):
    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.n1(self.c1(x))), 1)
        return self.head(self.flat(F.relu(self.n2(self.c2(x)))))


class NamedMLP(MLP):
    """A subclass with the zoo MLP's forward: judged by its forward, it gets the same fast paths."""


class ShiftedMLP(MLP):
    """A subclass whose forward adds something: no chain, so the whole forward pass."""

    def forward(self, x):
        return super().forward(x) + 1


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(F.relu(self.a(F.relu(self.a(x)))))


class Sequence3d(nn.Module):
    """A Linear over the last dim of (N, T, F): not a chain the evaluators' rows (dim 1) can cut."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


def test_the_zoo_chains_are_read_from_their_graphs():
    lenet = build_model(ModelConfig(name="lenet300_100"), (1, 28, 28), 10)
    assert layer_chain(lenet, 4) == [ChainStep("fc1", relu=True, flatten=True), ChainStep("fc2", relu=True),
                                     ChainStep("fc3")]
    cnn = build_model(ModelConfig(name="basiccnn"), (3, 23, 23), 10)
    assert layer_chain(cnn, 4) == [*(ChainStep(f"conv{i}", relu=True, norm=f"bn{i}") for i in range(1, 5)),
                                   ChainStep("fc1", flatten=True)]
    assert layer_chain(ConvBnRelu(), 4) == [ChainStep("c1", relu=True, norm="n1", norm_first=True),
                                            ChainStep("c2", relu=True, norm="n2", norm_first=True),
                                            ChainStep("head", flatten=True)]


@pytest.mark.parametrize("model", [Residual(), Pooled(), Twice(), Sequence3d()], ids=type)
def test_anything_else_has_no_chain(model):
    dims = 3 if isinstance(model, Sequence3d) else 2 if isinstance(model, Twice) else 4
    assert layer_chain(model, dims) is None
    assert layer_chain(ConvBnRelu(), 2) is None  # a conv reads 4 dimensions


def scoring_setting(model, shape, images=300, seed=1):
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key, value in model.state_dict().items():
        if key.endswith("running_var"):
            value = torch.rand(value.shape, generator=generator) + 0.5
        elif value.is_floating_point():
            value = value + 0.05 * torch.randn(value.shape, generator=generator)
        weights[key] = value
    x = torch.randn(images, *shape, generator=generator)
    y = torch.randint(0, 10, (images,), generator=generator)
    return weights, x, y


def test_a_users_chain_gets_the_incremental_evaluator_with_the_reference_scores(tmp_path):
    torch.manual_seed(0)
    model = ConvBnRelu()
    weights, x, y = scoring_setting(model, (3, 12, 12))
    torch.save(weights, tmp_path / "user.pt")
    trace(model, x[:2])
    for space in (unit_space(model), weight_space(model)):
        evaluator = make_evaluator(model, weights, space, x, y, metric="loss")
        assert isinstance(evaluator, IncrementalEvaluator)
        for keep in move_sequence(space, 12, 0.6):
            assert evaluator.score(keep) == reference_score(tmp_path / "user.pt", ConvBnRelu, space.to_mask(keep),
                                                            x, y, "loss")
    residual = Residual()
    trace(residual, x[:2])
    assert isinstance(make_evaluator(residual, weights, unit_space(residual), x, y), ForwardEvaluator)


@pytest.mark.parametrize("user_model", [ConvBnRelu, ConvMLPHead])
def test_a_users_chain_gets_live_channel_accuracy_with_the_reference_scores(user_model, tmp_path):
    torch.manual_seed(0)
    model = user_model()
    weights, x, y = scoring_setting(model, (3, 12, 12))
    torch.save(weights, tmp_path / "user.pt")
    trace(model, x[:2])
    space = unit_space(model)
    evaluator = make_evaluator(model, weights, space, x, y)
    assert isinstance(evaluator, LiveEvaluator)
    for i, keep in enumerate(move_sequence(space, 16, 0.6)):
        if i == 8:
            evaluator.relative = float("inf")  # from here every prediction comes from a recount
        assert evaluator.score(keep) == reference_score(tmp_path / "user.pt", user_model, space.to_mask(keep), x, y)
    assert evaluator.recounted_images >= 7 * len(y)


def test_mlp_subclasses_are_judged_by_their_forward(tmp_path):
    named = NamedMLP((1, 28, 28), 10, [30, 20])
    weights, x, y = scoring_setting(named, (1, 28, 28))
    torch.save(weights, tmp_path / "mlp.pt")
    space = weight_space(named)
    evaluator = make_evaluator(named, weights, space, x, y)
    assert isinstance(evaluator, DeltaEvaluator)
    for keep in move_sequence(space, 6, 0.9):
        expected = reference_score(tmp_path / "mlp.pt", lambda: NamedMLP((1, 28, 28), 10, [30, 20]),
                                   space.to_mask(keep), x, y)
        assert evaluator.score(keep) == expected
    shifted = ShiftedMLP((1, 28, 28), 10, [30, 20])
    assert isinstance(make_evaluator(shifted, weights, space, x, y), ForwardEvaluator)
