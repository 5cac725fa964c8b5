"""Layers and models: Module, Sequential, Linear, activations, BatchNorm1d, Dropout."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d
from .container import Sequential
from .dropout import Dropout
from .linear import Linear
from .module import Module
from .parameter import Arena, Parameter

__all__ = [
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
    "Tanh",
]
