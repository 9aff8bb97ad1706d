"""The model zoo: sizes, shapes, seeding and configuration errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import ModelConfig
from ticketlab.models import ModelError, build_model, model_names

torch.set_num_threads(1)

MNIST, CIFAR, DIGITS = (1, 28, 28), (3, 32, 32), (1, 8, 8)
DOES_NOT_FIT = {("basiccnn", DIGITS): "at least 19x19"}


def build(name: str, shape=CIFAR, classes: int = 10, seed: int = 0, **cfg) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    return build_model(ModelConfig(name=name, **cfg), shape, classes, generator=generator)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_lenet300_100_parameter_count():
    assert count(build("lenet300_100", MNIST)) == 266_610
    assert count(build("lenet300_100", MNIST, bias=False)) == 266_200


# Exact counts on CIFAR-10 and MNIST shapes, 10 classes: a change here changes a published
# architecture, so it has to be deliberate.
PARAMETERS = {
    "lenet300_100": (953_010, 266_610),
    "mlp_1000": (4_674_000, 2_386_000),
    "conv2": (4_301_642, 3_317_450),
    "conv4": (2_425_930, 1_933_258),
    "conv6": (2_262_602, 1_802_698),
    "basiccnn": (1_634_826, 1_597_834),
    "vgg11": (9_228_362, 9_227_210),
    "vgg13": (9_413_066, 9_411_914),
    "vgg16": (14_724_042, 14_722_890),  # the usual "VGG-16 for CIFAR, 14.7M"
    "vgg19": (20_035_018, 20_033_866),
    "resnet20": (269_722, 269_434),  # He et al.: 0.27M
    "resnet32": (464_154, 463_866),  # 0.46M
    "resnet56": (853_018, 852_730),  # 0.85M
    "resnet18": (11_173_962, 11_172_810),  # the usual "ResNet-18 for CIFAR, 11.2M"
    "mobilenet_v2": (2_236_682, 2_236_106),  # MobileNetV2 for CIFAR, 2.2M
}


def test_every_model_has_a_pinned_parameter_count():
    assert sorted(PARAMETERS) == sorted(model_names())


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts(name):
    assert (count(build(name, CIFAR)), count(build(name, MNIST))) == PARAMETERS[name]


def test_resnet_shortcut_b_adds_projections():
    # OpenLTH's cifar_resnet_20 (1x1-conv shortcuts) has 272,474 parameters.
    assert count(build("resnet20", shortcut="B")) == 272_474


@pytest.mark.parametrize(
    ("name", "weights"),
    # Frankle & Carbin, Fig. 2: 4.3M, 2.4M and 1.7M weights. Their layout gives Conv-6
    # 1.14M conv + 1.12M fc weights, so the 1.7M in the paper cannot be matched.
    [("conv2", 4_300_992), ("conv4", 2_425_024), ("conv6", 2_261_184)],
)
def test_conv_weight_counts(name, weights):
    model = build(name)
    assert sum(model.get_parameter(p).numel() for p in model.prunable_parameters()) == weights


@pytest.mark.parametrize("shape", [MNIST, CIFAR, DIGITS], ids=["mnist", "cifar", "digits"])
@pytest.mark.parametrize("name", model_names())
def test_output_shape(name, shape):
    if (name, shape) in DOES_NOT_FIT:
        with pytest.raises(ModelError, match=DOES_NOT_FIT[name, shape]):
            build(name, shape)
        return
    model = build(name, shape, classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_too_small_input_names_the_model_and_the_smallest_size():
    with pytest.raises(ModelError, match=r"conv6 .*1x4x4.* at least 8x8"):
        build("conv6", (1, 4, 4))


@pytest.mark.parametrize("name", model_names())
def test_same_seed_same_weights_other_seed_other_weights(name):
    shape = MNIST if name == "basiccnn" else DIGITS
    first, again, other = (build(name, shape, seed=s).state_dict() for s in (0, 0, 1))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_building_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    build("resnet20")
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("init", ["kaiming_normal", "kaiming_uniform", "xavier_normal", None])
def test_init_zeroes_biases_and_resets_batchnorm(init):
    model = build("vgg11", bias=True, init=init)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            assert torch.all(module.bias == 0)
            assert module.weight.std() > 0
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
            assert torch.all(module.running_mean == 0) and torch.all(module.running_var == 1)


def test_default_init_is_kaiming_normal():
    weight = build("lenet300_100", MNIST).fc1.weight
    assert weight.mean().abs() < 1e-3
    assert weight.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.02)


def test_torch_init_reproduces_pytorch_defaults_with_biases():
    layer = build("lenet300_100", MNIST, init="torch").fc1
    bound = 1 / 784**0.5
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.99 * bound
    assert layer.bias.abs().max() <= bound and layer.bias.std() > 0


def test_bias_defaults_and_overrides():
    def has_bias(model, layer):
        return model.get_submodule(layer).bias is not None

    assert not has_bias(build("mlp_1000", MNIST), "fc1")
    assert has_bias(build("mlp_1000", MNIST, bias=True), "fc1")
    assert has_bias(build("conv2"), "features.conv1")
    vgg = build("vgg11")
    assert not has_bias(vgg, "layers.0.conv") and has_bias(vgg, "fc")
    vgg = build("vgg11", bias=True)
    assert has_bias(vgg, "layers.0.conv") and has_bias(vgg, "fc")
    resnet = build("resnet20", bias=False)
    assert not has_bias(resnet, "conv") and not has_bias(resnet, "fc")


def test_prunable_parameters_and_output_layer():
    model = build("lenet300_100", MNIST)
    assert model.prunable_parameters() == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert model.output_layer == "fc3"
    for name in model_names():
        model = build(name, MNIST)
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        assert len(model.prunable_parameters()) == len(layers)
        assert f"{model.output_layer}.weight" == model.prunable_parameters()[-1]
        assert model.get_submodule(model.output_layer).out_features == 10


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ModelError, match="unknown model 'lenet5'.*lenet300_100.*resnet56"):
        build("lenet5")


def test_unknown_init_and_shortcut():
    with pytest.raises(ModelError, match="unknown init 'orthogonal'"):
        build("lenet300_100", MNIST, init="orthogonal")
    with pytest.raises(ModelError, match="unknown ResNet shortcut 'C'"):
        build("resnet20", shortcut="C")


def test_vgg_matches_openlth_on_cifar():
    # OpenLTH's cifar_vgg pools without ceil_mode and ends with AvgPool2d(2); on 32x32 inputs
    # both give the same shapes and outputs as this VGG.
    model = build("vgg11").eval()
    x = torch.randn(2, *CIFAR)
    out = x
    with torch.no_grad():
        for layer in model.layers:
            out = F.max_pool2d(out, 2) if isinstance(layer, nn.MaxPool2d) else layer(out)
        assert out.shape[2:] == (2, 2)
        expected = model.fc(F.avg_pool2d(out, 2).flatten(1))
        torch.testing.assert_close(model(x), expected)


def test_resnet_option_a_pads_a_quarter_of_the_channels_each_side():
    model = build("resnet20").eval()
    block = model.blocks[3]
    x = torch.randn(2, 16, 8, 8)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (2, 32, 4, 4)
    assert torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert torch.all(shortcut[:, :8] == 0) and torch.all(shortcut[:, 24:] == 0)
