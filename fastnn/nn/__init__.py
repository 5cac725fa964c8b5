"""Layers and models: Module, Sequential, Linear, activations, BatchNorm1d, Dropout."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d
from .container import Sequential
from .dropout import Dropout
from .linear import Linear
from .module import Module
from .parameter import Arena, Parameter

__all__ = [
    "Module",
    "Parameter",
    "Arena",
    "Sequential",
    "Linear",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "BatchNorm1d",
    "Dropout",
]
