"""Flatten: (N, ...) -> (N, prod(...)), in C order."""

import numpy as np

from .module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """y = x.reshape(N, -1): each sample's values in C order (channels, then rows, then
    columns for images), as torch.nn.Flatten. A view of x when x is C-contiguous. In a
    compiled plan it moves no data."""

    def config(self):
        return {}

    def forward(self, x):
        if not isinstance(x, np.ndarray) or x.ndim < 2:
            raise ValueError(f"Flatten: expected input of shape (N, ...), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        self._x = x
        return x.reshape(x.shape[0], -1)

    def backward(self, dout, input_grad=True):
        shape = self._x.shape
        if not input_grad:
            return None
        if not isinstance(dout, np.ndarray) or dout.shape != (shape[0], int(np.prod(shape[1:]))):
            raise ValueError(f"Flatten: expected dout of shape "
                             f"{(shape[0], int(np.prod(shape[1:])))}, got "
                             f"{getattr(dout, 'shape', type(dout).__name__)}")
        return dout.reshape(shape)

    def add_to_plan(self, plan, after):
        plan.reshape((plan.d_out,))
        return 1
