"""mlp(): the multilayer perceptron that the command line and the estimators build."""

import numpy as np

from .activation import ELU, GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Tanh
from .batchnorm import BatchNorm1d
from .container import Sequential
from .dropout import Dropout
from .linear import Linear

__all__ = ["ACTIVATIONS", "mlp"]

ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "elu": ELU, "gelu": GELU, "silu": SiLU,
               "sigmoid": Sigmoid, "tanh": Tanh}
_HE = {"relu", "leaky_relu", "elu", "gelu", "silu"}  # ReLU-like: He initialization


def mlp(n_in, n_out, hidden, activation="relu", batch_norm=False, dropout=0.0, seed=0,
        dtype=np.float32):
    """Sequential: per hidden width, Linear [-> BatchNorm1d] -> activation [-> Dropout];
    then a Linear to n_out outputs.

    He initialization before ReLU-like activations, Xavier otherwise and for the output
    layer. Layer i's weights use seed + i, its Dropout seed + 1000 + i.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers = []
    init = "he" if activation in _HE else "xavier"
    for i, width in enumerate(hidden):
        layers.append(Linear(n_in, width, init=init, seed=seed + i, dtype=dtype))
        if batch_norm:
            layers.append(BatchNorm1d(width, dtype=dtype))
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(Dropout(dropout, seed=seed + 1000 + i))
        n_in = width
    layers.append(Linear(n_in, n_out, init="xavier", seed=seed + len(hidden), dtype=dtype))
    return Sequential(*layers)
