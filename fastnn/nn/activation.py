"""Activation layers. In a Sequential, one that follows a Linear is fused into it."""

from .. import ops
from .module import Module

__all__ = ["LeakyReLU", "ReLU", "Sigmoid", "Tanh"]


class _Activation(Module):
    activation = None  # the name fastnn.ops knows it by
    slope = 0.0

    def __init__(self):
        super().__init__()
        self.fused = False  # set by Sequential when a Linear computes it

    def config(self):
        return {}

    def extra_repr(self):
        return "fused" if self.fused else ""

    def forward(self, x):
        if self.fused:
            return x
        y = self.workspace("y", x.shape, x.dtype)
        self._x = x
        self._y = self._forward(x, y)
        return self._y

    def backward(self, dout):
        if self.fused:
            return dout
        return self._backward(dout, self.workspace("dx", dout.shape, dout.dtype))


class ReLU(_Activation):
    """max(x, 0)."""

    activation = "relu"

    def _forward(self, x, out):
        return ops.relu(x, out=out)

    def _backward(self, dout, out):
        return ops.relu_backward(dout, self._y, out=out)


class LeakyReLU(_Activation):
    """x where x > 0, else slope * x."""

    activation = "leaky_relu"

    def __init__(self, slope=0.01):
        super().__init__()
        self.slope = ops._check_slope(slope)

    def config(self):
        return {"slope": self.slope}

    def extra_repr(self):
        return f"slope={self.slope}" + (", fused" if self.fused else "")

    def _forward(self, x, out):
        return ops.leaky_relu(x, self.slope, out=out)

    def _backward(self, dout, out):
        return ops.leaky_relu_backward(dout, self._x, self.slope, out=out)


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), overflow-safe."""

    activation = "sigmoid"

    def _forward(self, x, out):
        return ops.sigmoid(x, out=out)

    def _backward(self, dout, out):
        return ops.sigmoid_backward(dout, self._y, out=out)


class Tanh(_Activation):
    """tanh(x)."""

    activation = "tanh"

    def _forward(self, x, out):
        return ops.tanh(x, out=out)

    def _backward(self, dout, out):
        return ops.tanh_backward(dout, self._y, out=out)
