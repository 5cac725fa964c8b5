"""Layers and models: Module, Sequential, Linear, Conv2d, activations, BatchNorm1d (and
SyncBatchNorm), Dropout."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d
from .container import Sequential
from .conv import Conv2d
from .dropout import Dropout
from .linear import Linear
from .mlp import ACTIVATIONS, mlp
from .module import Module
from .parameter import Arena, Parameter
from .syncbatchnorm import SyncBatchNorm

__all__ = [
    "ACTIVATIONS",
    "Arena",
    "BatchNorm1d",
    "Conv2d",
    "Dropout",
    "LeakyReLU",
    "Linear",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SyncBatchNorm",
    "Tanh",
    "mlp",
]
