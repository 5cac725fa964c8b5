"""Fully connected layer: y = f(x @ weight + bias), GEMM plus a fused epilogue."""

import numpy as np

from .. import ops
from .._checks import check_array
from .._seed import resolve_seed
from .module import Module, check_input

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
    out)). Biases start at zero. seed: the initial weights' seed (None: the next of
    fastnn.manual_seed's stream after it was called, else a random one). In a compiled
    plan an activation layer right after a Linear runs in its GEMM epilogue (bias +
    activation in one pass, and backward activation gradient + bias gradient in one
    pass); the layer itself always computes x @ weight + bias alone.
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
        rng = np.random.default_rng(resolve_seed(seed))
        weight = rng.standard_normal((self.in_features, self.out_features)) * std
        params = {"weight": (weight, "weight")}
        if bias:
            params["bias"] = (np.zeros(self.out_features), "bias")
        self.add_parameters(dtype, **params)
        if not bias:
            self.bias = None
            self._zero_bias = np.zeros(self.out_features, dtype)

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "dtype": str(self.weight.dtype)}

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, "
                f"dtype={self.weight.dtype}")

    def _check_input(self, width, shape):
        if width != self.in_features:
            raise ValueError(f"Linear: expected input of shape (N, {self.in_features}), got "
                             f"{shape}")

    def forward(self, x):
        check_input(self, x, self.weight.dtype)
        if x.ndim != 2:
            raise ValueError(f"Linear: expected input of shape (N, {self.in_features}), got "
                             f"{x.shape}")
        self._check_input(x.shape[1], x.shape)
        y = self.workspace("y", (x.shape[0], self.out_features), self.weight.dtype)
        ops.matmul(x, self.weight, out=y)
        if self.bias is not None:
            ops.bias_activation(y, self.bias, None, out=y)
        self._x, self._y = x, y
        return y

    def backward(self, dout, input_grad=True):
        dz = check_array(dout, "dout")
        if self.weight.requires_grad:
            ops.matmul(self._x, dz, trans_a=True, out=self.weight.grad, accumulate=True)
        if self.bias is not None and self.bias.requires_grad:
            db = self.workspace("db", (self.out_features,), self.weight.dtype)
            self.bias.grad += ops.column_sum(dz, out=db)
        if not input_grad:
            return None
        return ops.matmul(dz, self.weight, trans_b=True,
                          out=self.workspace("dx", (dz.shape[0], self.in_features),
                                             self.weight.dtype))

    # ------------------------------------------------------------ compiled form

    def plan_state(self):
        return ("training", "weight", "bias")

    def add_to_plan(self, plan, after):
        """One GEMM op; an activation `after` it that offers an epilogue runs in it."""
        self._check_input(plan.d_out if len(plan.shape) == 1 else -1, ("N", *plan.shape))
        fused = None if after is None else after.epilogue()
        act, slope = fused if fused is not None else (None, 0.0)
        bias = self.bias
        plan.add_linear(
            self.out_features, self.weight,
            self.weight.grad if self.weight.requires_grad else None, bias,
            None if bias is None or not bias.requires_grad else bias.grad,
            act, slope, getattr(self, "_zero_bias", None))
        return 1 if fused is None else 2
