"""The model zoo: names to builders, and build_model, which also initialises the weights."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ticketlab.config import ModelConfig
from ticketlab.models.base import ModelError, Shape, ZooModel
from ticketlab.models.basiccnn import BasicCNN
from ticketlab.models.cifar import MobileNetV2, ResNet18
from ticketlab.models.conv import PLANS as CONV_PLANS
from ticketlab.models.conv import ConvNet
from ticketlab.models.initializers import DEFAULT_INIT, INITS, initialize
from ticketlab.models.mlp import MLP
from ticketlab.models.resnet import ResNet
from ticketlab.models.vgg import PLANS as VGG_PLANS
from ticketlab.models.vgg import VGG

Builder = Callable[[ModelConfig, Shape, int], ZooModel]


def _bias(cfg: ModelConfig, default: bool) -> bool:
    return default if cfg.bias is None else cfg.bias


MODELS: dict[str, Builder] = {
    "lenet300_100": lambda cfg, shape, n: MLP(shape, n, (300, 100), bias=_bias(cfg, True)),
    "mlp_1000": lambda cfg, shape, n: MLP(shape, n, (1000, 1000, 500, 200), bias=_bias(cfg, False)),
    "conv2": lambda cfg, shape, n: ConvNet(shape, n, CONV_PLANS["conv2"], bias=_bias(cfg, True)),
    "conv4": lambda cfg, shape, n: ConvNet(shape, n, CONV_PLANS["conv4"], bias=_bias(cfg, True)),
    "conv6": lambda cfg, shape, n: ConvNet(shape, n, CONV_PLANS["conv6"], bias=_bias(cfg, True)),
    "basiccnn": lambda cfg, shape, n: BasicCNN(shape, n, bias=_bias(cfg, True)),
    "vgg11": lambda cfg, shape, n: VGG(shape, n, VGG_PLANS["vgg11"], bias=cfg.bias),
    "vgg13": lambda cfg, shape, n: VGG(shape, n, VGG_PLANS["vgg13"], bias=cfg.bias),
    "vgg16": lambda cfg, shape, n: VGG(shape, n, VGG_PLANS["vgg16"], bias=cfg.bias),
    "vgg19": lambda cfg, shape, n: VGG(shape, n, VGG_PLANS["vgg19"], bias=cfg.bias),
    "resnet20": lambda cfg, shape, n: ResNet(shape, n, 20, shortcut=cfg.shortcut, bias=cfg.bias),
    "resnet32": lambda cfg, shape, n: ResNet(shape, n, 32, shortcut=cfg.shortcut, bias=cfg.bias),
    "resnet56": lambda cfg, shape, n: ResNet(shape, n, 56, shortcut=cfg.shortcut, bias=cfg.bias),
    "resnet18": lambda cfg, shape, n: ResNet18(shape, n),
    "mobilenet_v2": lambda cfg, shape, n: MobileNetV2(shape, n),
}


def model_names() -> list[str]:
    return list(MODELS)


def build_model(
    cfg: ModelConfig,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    generator: torch.Generator | None = None,
) -> ZooModel:
    """Build a zoo model for images of input_shape (C, H, W) and initialise it from `generator`.

    The same generator state gives bit-identical weights; the global RNG is left untouched.
    """
    if cfg.name not in MODELS:
        raise ModelError(f"unknown model {cfg.name!r}; expected one of {', '.join(MODELS)}")
    init = cfg.init or DEFAULT_INIT
    if init not in INITS:
        raise ModelError(f"unknown init {init!r}; expected one of {', '.join(INITS)}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ModelError(f"input shape {tuple(input_shape)} is not (channels, height, width) of positive sizes")
    if num_classes < 1:
        raise ModelError(f"a model needs at least one class, not {num_classes}")

    # On the meta device the layers' own reset_parameters allocate and draw nothing.
    with torch.device("meta"):
        model = MODELS[cfg.name](cfg, tuple(input_shape), num_classes)
    model.to_empty(device="cpu")
    initialize(model, init, generator)
    return model


def state_shapes(cfg: ModelConfig, input_shape: Shape, num_classes: int) -> dict[str, tuple[int, ...]]:
    """The shape of every entry of the model's state_dict, without building its weights."""
    with torch.device("meta"):
        model = MODELS[cfg.name](cfg, tuple(input_shape), num_classes)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def model_facts(name: str, input_shape: Shape, num_classes: int) -> dict[str, object] | None:
    """What `ticketlab models` shows of a zoo model built for these inputs: its parameter count and
    its structured (channel) groups with their sizes; None when the model does not fit the inputs."""
    try:
        with torch.device("meta"):  # nothing is allocated or drawn
            model = MODELS[name](ModelConfig(name=name), tuple(input_shape), num_classes)
    except (ModelError, RuntimeError, ValueError):
        return None
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "prunable": len(model.prunable_parameters()),
            "groups": {group.name: group.size for group in model.channel_groups()}}
