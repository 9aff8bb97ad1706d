"""The model zoo: MLPs, Conv-2/4/6, BasicCNN, VGG and CIFAR ResNets, each declaring its structure."""

from ticketlab.models.base import ModelError, ZooModel
from ticketlab.models.registry import MODELS, build_model, model_names, state_shapes
from ticketlab.models.structure import ChannelGroup, Slice

__all__ = ["MODELS", "ChannelGroup", "ModelError", "Slice", "ZooModel", "build_model", "model_names",
           "state_shapes"]
