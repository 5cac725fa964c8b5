"""Layers and models: Module, Sequential, Linear, activations, BatchNorm1d (and
SyncBatchNorm), Dropout."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d
from .container import Sequential
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
