"""Layers and models: Module, Sequential, Linear, activations, BatchNorm1d (and
SyncBatchNorm), BatchNorm2d, pooling, Dropout."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d, BatchNorm2d
from .container import Sequential
from .dropout import Dropout
from .linear import Linear
from .mlp import ACTIVATIONS, mlp
from .module import Module
from .parameter import Arena, Parameter
from .pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .syncbatchnorm import SyncBatchNorm

__all__ = [
    "ACTIVATIONS",
    "Arena",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Dropout",
    "GlobalAvgPool2d",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SyncBatchNorm",
    "Tanh",
    "mlp",
]
