"""Fully connected layer: y = f(x @ weight + bias), GEMM plus a fused epilogue."""

import numpy as np

from .. import ops
from .module import Module

__all__ = ["Linear"]

_INITS = ("he", "xavier")


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


class Linear(Module):
    """y = x @ weight + bias, x (N, in_features) -> y (N, out_features).

    weight has shape (in_features, out_features) (the transpose of PyTorch's layout, so
    that the forward GEMM reads it as stored); bias has shape (out_features,).
    init="he": weight ~ N(0, 2 / in_features) (for ReLU nets); "xavier": N(0, 2 / (in +
    out)). Biases start at zero. In a Sequential, an activation layer right after a
    Linear is fused into its GEMM epilogue (bias + activation in one pass, and in the
    backward pass activation gradient + bias gradient in one pass).
    """

    def __init__(self, in_features, out_features, bias=True, init="he", seed=None,
                 dtype=np.float32):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        if init not in _INITS:
            raise ValueError(f"init: expected one of {_INITS}, got {init!r}")
        dtype = _float_dtype(dtype)
        if init == "he":
            std = np.sqrt(2.0 / self.in_features)
        else:
            std = np.sqrt(2.0 / (self.in_features + self.out_features))
        rng = np.random.default_rng(seed)
        weight = rng.standard_normal((self.in_features, self.out_features)) * std
        params = {"weight": (weight, "weight")}
        if bias:
            params["bias"] = (np.zeros(self.out_features), "bias")
        self.add_parameters(dtype, **params)
        if not bias:
            self.bias = None
            self._zero_bias = np.zeros(self.out_features, dtype)
        self.activation = None  # a fused activation, set by Sequential
        self.slope = 0.01
        self.input_grad = True  # whether backward computes dx

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "dtype": str(self.weight.dtype)}

    def extra_repr(self):
        act = f", activation={self.activation!r}" if self.activation else ""
        return (f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"
                f"{act}, dtype={self.weight.dtype}")

    def forward(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Linear: expected input of shape (N, {self.in_features}), got "
                f"{getattr(x, 'shape', type(x).__name__)}"
            )
        y = self.workspace("y", (x.shape[0], self.out_features), self.weight.dtype)
        ops.matmul(x, self.weight, out=y)
        bias = self._zero_bias if self.bias is None else self.bias
        if self.bias is not None or self.activation is not None:
            ops.bias_activation(y, bias, self.activation, self.slope, out=y)
        self._x, self._y = x, y
        return y

    def backward(self, dout):
        n = dout.shape[0]
        dtype = self.weight.dtype
        db = self.workspace("db", (self.out_features,), dtype)
        if self.activation is None:
            dz = ops._input(dout, "dout")
            ops.column_sum(dz, out=db)
        else:
            dz, _ = ops.activation_bias_backward(
                dout, self._y, self.activation, self.slope,
                out=self.workspace("dz", (n, self.out_features), dtype), dbias=db)
        ops.matmul(self._x, dz, trans_a=True, out=self.weight.grad, accumulate=True)
        if self.bias is not None:
            self.bias.grad += db
        if not self.input_grad:
            return None
        return ops.matmul(dz, self.weight, trans_b=True,
                          out=self.workspace("dx", (n, self.in_features), dtype))
