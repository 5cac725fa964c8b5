"""Layers and models: Module, Sequential, Residual, Linear, Conv2d, activations,
BatchNorm1d (and SyncBatchNorm), Dropout, Flatten."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d
from .container import Sequential
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Linear
from .mlp import ACTIVATIONS, mlp
from .module import Module
from .parameter import Arena, Parameter
from .residual import Residual
from .syncbatchnorm import SyncBatchNorm

__all__ = [
    "ACTIVATIONS",
    "Arena",
    "BatchNorm1d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "LeakyReLU",
    "Linear",
    "Module",
    "Parameter",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "SyncBatchNorm",
    "Tanh",
    "mlp",
]
