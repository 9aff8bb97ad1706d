"""Each criterion against scores or masks worked out by hand, or by a plain autograd computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ticketlab.config import ModelConfig, TicketlabError
from ticketlab.models import build_model
from ticketlab.models.mlp import MLP
from ticketlab.models.resnet import ResNet
from ticketlab.models.vgg import VGG
from ticketlab.sparsity.criteria import CRITERIA, ScoreContext, get_criterion
from ticketlab.sparsity.mask import Mask, unit_mask_to_mask
from ticketlab.sparsity.selection import score_and_select

NAMES = ["0.weight", "2.weight"]
W1 = [[0.5, -0.1, 0.3], [-0.7, 0.2, -0.05]]
W2 = [[0.4, -0.6], [0.01, 0.8]]
I1 = [[0.1, 0.2, -0.3], [0.4, 0.5, -0.6]]
I2 = [[-1.0, -1.0], [1.0, 1.0]]


def toy(w1=W1, w2=W2, hidden: type[nn.Module] = nn.ReLU, bias: bool = False) -> nn.Sequential:
    """Linear, activation, Linear, with the given weights."""
    model = nn.Sequential(nn.Linear(len(w1[0]), len(w1), bias=bias), hidden(),
                          nn.Linear(len(w2[0]), len(w2), bias=bias))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(w1))
        model[2].weight.copy_(torch.tensor(w2))
    return model


def kept(mask: Mask, names=NAMES) -> list:
    return [mask[name].int().tolist() for name in names]


def batches(inputs: int, classes: int, count: int = 2, size: int = 5, dtype=torch.float32) -> list:
    generator = torch.Generator().manual_seed(3)
    return [(torch.randn(size, inputs, generator=generator, dtype=dtype),
             torch.randint(0, classes, (size,), generator=generator)) for _ in range(count)]


def test_registry_flags():
    assert set(CRITERIA) == {"magnitude", "magnitude_sign", "magnitude_increase", "random", "snip", "grasp",
                             "synflow", "l1_norm", "l2_norm", "bn_scale", "random_units", "magnitude_sign_units"}
    assert {n for n, c in CRITERIA.items() if c.structured} == {"l1_norm", "l2_norm", "bn_scale", "random_units",
                                                                "magnitude_sign_units"}
    assert {n for n, c in CRITERIA.items() if c.needs_data} == {"snip", "grasp"}
    assert {n for n, c in CRITERIA.items() if c.needs_init} == {"magnitude_sign", "magnitude_increase",
                                                                "magnitude_sign_units"}
    assert get_criterion("synflow").rounds == 100


# --- unstructured, from weights ----------------------------------------------------------------

def test_magnitude_global_and_layerwise():
    ctx = ScoreContext(toy(), NAMES)
    # |w| sorted: .01 .05 .1 .2 .3 | .4 .5 .6 .7 .8
    assert kept(score_and_select(ctx, "magnitude", 0.5)) == [[[1, 0, 0], [1, 0, 0]], [[1, 1], [0, 1]]]
    # per layer: .05 .1 .2 of the first, .01 .4 of the second
    layerwise = score_and_select(ctx, "magnitude", 0.5, scope="layerwise")
    assert kept(layerwise) == [[[1, 0, 1], [1, 0, 0]], [[0, 1], [0, 1]]]


def test_magnitude_sign_prunes_flipped_weights_first():
    init = {"0.weight": torch.tensor(I1), "2.weight": torch.tensor(I2)}
    ctx = ScoreContext(toy(), NAMES, init=init)
    # Flipped: .1 .3 .7 (first layer) and .4 (second). They go first, the largest (.7) last of them,
    # then the smallest same-sign weight (.01).
    assert kept(score_and_select(ctx, "magnitude_sign", 0.3)) == [[[1, 0, 0], [1, 1, 1]], [[0, 1], [1, 1]]]
    assert kept(score_and_select(ctx, "magnitude_sign", 0.5)) == [[[1, 0, 0], [0, 1, 1]], [[0, 1], [0, 1]]]


def test_magnitude_increase():
    init = {"0.weight": torch.tensor(I1), "2.weight": torch.tensor(I2)}
    ctx = ScoreContext(toy(), NAMES, init=init)
    # |w_f| - |w_i|: [.4 -.1 0; .3 -.3 -.55] and [-.6 -.4; -.99 -.2]
    assert kept(score_and_select(ctx, "magnitude_increase", 0.5)) == [[[1, 1, 1], [1, 0, 0]], [[0, 0], [0, 1]]]


def test_scores_come_from_the_masked_model():
    mask = Mask({"0.weight": torch.tensor([[False, True, True], [True, True, True]]),
                 "2.weight": torch.ones(2, 2, dtype=torch.bool)})
    scores = get_criterion("magnitude").scores(ScoreContext(toy(), NAMES, mask=mask))
    assert scores["0.weight"][0, 0] == 0 and scores["0.weight"][1, 0] == pytest.approx(0.7)


def test_random_is_reproducible_by_seed():
    def mask(seed: int) -> Mask:
        model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
        ctx = ScoreContext(model, NAMES, generator=torch.Generator().manual_seed(seed))
        return score_and_select(ctx, "random", 0.7)

    assert mask(0) == mask(0)
    assert mask(0) != mask(1)
    assert mask(0).kept() == 900 - round(900 * 0.7)
    with pytest.raises(TicketlabError, match="generator"):
        score_and_select(ScoreContext(toy(), NAMES), "random", 0.5)


# --- unstructured, from data -------------------------------------------------------------------

def test_snip_is_the_mask_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))
    data = batches(3, 3)
    masks = {name: torch.ones_like(p, requires_grad=True) for name, p in model.named_parameters() if name in NAMES}
    params = {name: p * masks[name] if name in masks else p for name, p in model.named_parameters()}
    loss = sum(F.cross_entropy(functional_call(model, params, (x,)), y) for x, y in data)
    expected = dict(zip(masks, (g.abs() for g in torch.autograd.grad(loss, list(masks.values())))))

    scores = get_criterion("snip").scores(ScoreContext(model, NAMES, batches=data))
    for name in NAMES:
        torch.testing.assert_close(scores[name], expected[name])


def test_snip_uses_batch_statistics_without_dropout_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.ReLU(), nn.Linear(4, 3)).eval()
    plain = nn.Sequential(*[m for m in model if not isinstance(m, nn.Dropout)]).train()
    names = ["0.weight", "4.weight"]
    data = batches(3, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    scores = get_criterion("snip").scores(ScoreContext(model, names, batches=data))
    reference = get_criterion("snip").scores(ScoreContext(plain, ["0.weight", "3.weight"], batches=data))
    torch.testing.assert_close(scores["0.weight"], reference["0.weight"])
    torch.testing.assert_close(scores["4.weight"], reference["3.weight"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_grasp_is_theta_times_hessian_gradient_product():
    torch.manual_seed(0)
    model = toy(torch.randn(4, 3).tolist(), torch.randn(2, 4).tolist(), hidden=nn.Tanh).double()
    data = batches(3, 2, dtype=torch.float64)
    shapes = [model[0].weight.shape, model[2].weight.shape]
    theta = torch.cat([model[0].weight.detach().flatten(), model[2].weight.detach().flatten()])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        w1, w2 = flat[:12].reshape(shapes[0]), flat[12:].reshape(shapes[1])
        return sum(F.cross_entropy(torch.tanh(x @ w1.T) @ w2.T / 200, y) for x, y in data)

    g = torch.autograd.functional.jacobian(loss, theta)
    _, hg = torch.autograd.functional.hvp(loss, theta, g)
    expected = theta * hg

    scores = get_criterion("grasp").scores(ScoreContext(model, NAMES, batches=data))
    torch.testing.assert_close(torch.cat([scores[n].flatten() for n in NAMES]), expected)

    # The original removes the weights with the highest -θ⊙Hg.
    mask = score_and_select(ScoreContext(model, NAMES, batches=data), "grasp", 0.4)
    pruned = ~torch.cat([mask[n].flatten() for n in NAMES])
    assert set(pruned.nonzero().flatten().tolist()) == set((-expected).topk(round(20 * 0.4)).indices.tolist())


# --- synflow -----------------------------------------------------------------------------------

def test_synflow_scores_on_a_linearised_toy():
    model = toy()  # |W2| |W1| 1 with all-ones input; the ReLU passes nonnegative values through
    model.input_shape = (3,)
    a1, a2 = torch.tensor(W1).abs(), torch.tensor(W2).abs()
    scores = get_criterion("synflow").scores(ScoreContext(model, NAMES))
    torch.testing.assert_close(scores["0.weight"], (a1 * a2.sum(0)[:, None]).double())
    torch.testing.assert_close(scores["2.weight"], (a2 * a1.sum(1)[None, :]).double())
    assert model[0].weight[0, 1] < 0  # the model itself is not linearised


def test_synflow_needs_an_input_shape():
    with pytest.raises(TicketlabError, match="input shape"):
        get_criterion("synflow").scores(ScoreContext(toy(), NAMES))


def test_synflow_avoids_the_layer_collapse_of_magnitude():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 8, bias=False), nn.ReLU(),
                          nn.Linear(8, 2, bias=False))
    with torch.no_grad():
        model[2].weight.mul_(0.01)
    model.input_shape = (4,)
    names = ["0.weight", "2.weight", "4.weight"]
    ctx = ScoreContext(model, names)
    with pytest.raises(TicketlabError, match="would empty 2.weight"):
        score_and_select(ctx, "magnitude", 0.9, empty_layer="error")
    mask = score_and_select(ctx, "synflow", 0.9, empty_layer="error")
    assert mask.total() - mask.kept() == round(112 * 0.9)
    assert all(layer.kept > 0 for layer in mask.layers())


def test_synflow_on_a_batchnorm_model_reaches_the_exact_sparsity():
    model = build_model(ModelConfig(name="vgg11"), (1, 8, 8), 10, generator=torch.Generator().manual_seed(0))
    names = ["layers.0.conv.weight", "layers.2.conv.weight", "fc.weight"]
    mask = score_and_select(ScoreContext(model, names), "synflow", 0.9, rounds=10)
    total = sum(mask[n].numel() for n in names)
    assert total - sum(int(mask[n].sum()) for n in names) == round(total * 0.9)


# --- structured --------------------------------------------------------------------------------

def tiny_mlp() -> MLP:
    """fc1 4->3, fc2 3->2, fc3 2->3, with weights whose unit norms are easy to read off."""
    model = MLP((1, 2, 2), 3, (3, 2))
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[1, -1, 1, -1], [0.4, 0.4, -0.4, 0.4], [1.2, 0, 0, 0]]))
        model.fc1.bias.copy_(torch.tensor([0.0, 10, 10]))  # biases are not incoming weights
        model.fc2.weight.copy_(torch.tensor([[0.35, -0.35, 0.35], [0.75, 0, 0]]))
    return model


def test_l1_norm_is_the_mean_magnitude_of_incoming_weights():
    model = tiny_mlp()
    scores = get_criterion("l1_norm").scores(ScoreContext(model, model.prunable_parameters()))
    torch.testing.assert_close(scores["fc1"], torch.tensor([1.0, 0.4, 0.3]))
    torch.testing.assert_close(scores["fc2"], torch.tensor([0.35, 0.25]))

    ctx = ScoreContext(model, model.prunable_parameters())
    mask = score_and_select(ctx, "l1_norm", 0.4)  # 2 of 5 units: fc2's 0.25, fc1's 0.3
    assert mask == unit_mask_to_mask(model, {"fc1": torch.tensor([True, True, False]),
                                             "fc2": torch.tensor([True, False])})
    assert mask["fc1.bias"].tolist() == [True, True, False]
    assert mask["fc2.weight"].tolist() == [[True, True, False], [False, False, False]]
    assert mask["fc3.weight"][:, 1].tolist() == [False] * 3
    layerwise = score_and_select(ctx, "l1_norm", 0.5, scope="layerwise")  # 2 of fc1's 3, 1 of fc2's 2
    assert layerwise == unit_mask_to_mask(model, {"fc1": torch.tensor([True, False, False]),
                                                  "fc2": torch.tensor([True, False])})


def test_l2_norm_is_the_root_mean_square_of_incoming_weights():
    model = tiny_mlp()
    ctx = ScoreContext(model, model.prunable_parameters())
    scores = get_criterion("l2_norm").scores(ctx)
    torch.testing.assert_close(scores["fc1"], torch.tensor([1.0, 0.4, 0.6]))
    torch.testing.assert_close(scores["fc2"], torch.tensor([0.35, (0.75**2 / 3) ** 0.5]))
    assert score_and_select(ctx, "l2_norm", 0.4) == unit_mask_to_mask(
        model, {"fc1": torch.tensor([True, False, True]), "fc2": torch.tensor([False, True])})


def test_structured_pruning_keeps_pruned_units_pruned():
    model = tiny_mlp()
    first = unit_mask_to_mask(model, {"fc1": torch.tensor([False, True, True])})  # the best unit
    ctx = ScoreContext(model, model.prunable_parameters(), mask=first)
    mask = score_and_select(ctx, "l1_norm", 0.4)
    assert mask == unit_mask_to_mask(model, {"fc1": torch.tensor([False, True, True]),
                                             "fc2": torch.tensor([True, False])})


def tiny_vgg() -> VGG:
    model = VGG((1, 4, 4), 3, [2, "M", 3])
    with torch.no_grad():
        model.layers[0].bn.weight.copy_(torch.tensor([0.5, -2.0]))
        model.layers[2].bn.weight.copy_(torch.tensor([1.0, -0.1, 0.3]))
    return model


def test_bn_scale_prunes_the_smallest_scales():
    model = tiny_vgg()
    ctx = ScoreContext(model, model.prunable_parameters())
    mask = score_and_select(ctx, "bn_scale", 0.4)
    assert mask == unit_mask_to_mask(model, {"layers.0.conv": torch.tensor([True, True]),
                                             "layers.2.conv": torch.tensor([True, False, False])})
    assert mask["layers.2.bn.weight"].tolist() == mask["layers.2.bn.bias"].tolist() == [True, False, False]
    assert mask["fc.weight"][:, 1:].any().item() is False
    layerwise = score_and_select(ctx, "bn_scale", 0.5, scope="layerwise")
    assert layerwise == unit_mask_to_mask(model, {"layers.0.conv": torch.tensor([False, True]),
                                                  "layers.2.conv": torch.tensor([True, False, False])})


def test_bn_scale_of_a_residual_stream_is_the_mean_over_its_batchnorms():
    model = ResNet((1, 8, 8), 3, depth=8)
    with torch.no_grad():
        for i, module in enumerate(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            module.weight.copy_(torch.linspace(-1, 2, module.num_features) * (i + 1))
    scores = get_criterion("bn_scale").scores(ScoreContext(model, model.prunable_parameters()))
    # Stage 1's stream continues into stages 2 and 3 behind the zero-padded channels (8, then 16 more).
    gammas = [model.bn.weight, model.blocks[0].bn2.weight, model.blocks[1].bn2.weight[8:24],
              model.blocks[2].bn2.weight[24:40]]
    torch.testing.assert_close(scores["stage1.stream"], torch.stack(gammas).abs().mean(0).detach())
    torch.testing.assert_close(scores["blocks.0.conv1"], model.blocks[0].bn1.weight.abs().detach())


def test_structured_criteria_explain_what_is_missing():
    conv2 = build_model(ModelConfig(name="conv2"), (1, 8, 8), 10, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TicketlabError, match="bn_scale needs BatchNorm layers") as error:
        score_and_select(ScoreContext(conv2, conv2.prunable_parameters()), "bn_scale", 0.5)
    assert "\n" not in str(error.value)
    with pytest.raises(TicketlabError, match="channel groups"):
        score_and_select(ScoreContext(toy(), NAMES), "l1_norm", 0.5)


def test_structured_random_and_magnitude_sign_per_unit():
    from ticketlab.config import ModelConfig
    from ticketlab.models import build_model
    from ticketlab.sparsity.criteria import ScoreContext, get_criterion

    model = build_model(ModelConfig(name="lenet300_100"), (1, 8, 8), 10, generator=torch.Generator().manual_seed(0))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.fc1.weight[0] = -init["fc1.weight"][0] * 3  # unit 0's mean weight flips sign, grows 3x
        model.fc1.weight[1] = init["fc1.weight"][1] * 2  # unit 1 keeps its sign, grows 2x
    ctx = ScoreContext(model=model, names=["fc1.weight"], init=init, generator=torch.Generator().manual_seed(1))
    scores = get_criterion("magnitude_sign_units").scores(ctx)["fc1"]
    mean0, mean1 = init["fc1.weight"][0].mean(), init["fc1.weight"][1].mean()
    assert torch.allclose(scores[0], torch.sign(mean0) * (-3 * mean0)) and scores[0] < 0
    assert torch.allclose(scores[1], torch.sign(mean1) * (2 * mean1)) and scores[1] > 0
    first = get_criterion("random_units").scores(ctx)
    again = get_criterion("random_units").scores(ScoreContext(model=model, names=["fc1.weight"],
                                                              generator=torch.Generator().manual_seed(1)))
    assert set(first) == {"fc1", "fc2"} and first["fc1"].shape == (300,)
    assert all(torch.equal(first[g], again[g]) for g in first)
