"""Layers and models: Module, Sequential, Residual, Linear, Conv2d, activations,
BatchNorm1d (and SyncBatchNorm), BatchNorm2d, pooling, Dropout, Flatten."""

from .activation import ELU, GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Tanh
from .batchnorm import BatchNorm1d, BatchNorm2d
from .container import Sequential
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Linear
from .mlp import ACTIVATIONS, mlp
from .module import Module
from .parameter import Arena, Parameter
from .pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .residual import Residual
from .syncbatchnorm import SyncBatchNorm

__all__ = [
    "ACTIVATIONS",
    "ELU",
    "GELU",
    "Arena",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2d",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Residual",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "SyncBatchNorm",
    "Tanh",
    "mlp",
]
