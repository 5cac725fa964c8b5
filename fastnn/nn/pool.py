"""Pooling over the planes of (N, C, H, W) images: MaxPool2d, AvgPool2d, GlobalAvgPool2d.

Also the base of layers that run one KernelOp (_OpLayer) and the input check of image
layers (_check_images), which BatchNorm2d shares.
"""

import numpy as np

from .._checks import NON_NEGATIVE, POSITIVE, check_array, check_contiguous, check_int, check_pair
from .._kernels.pool import AvgPoolOp, GlobalAvgPoolOp, MaxPoolOp
from .._threads import get_num_threads
from .module import Module

__all__ = ["AvgPool2d", "GlobalAvgPool2d", "MaxPool2d"]


def _check_images(layer, x, channels=None, dtype=None):
    """x as a C-contiguous (N, C, H, W) array (a copy if it was not contiguous) of
    `channels` channels and of `dtype` when given, else float32 or float64."""
    name = type(layer).__name__
    if dtype is None:
        x = check_array(x, "x")
    elif not isinstance(x, np.ndarray) or x.dtype != dtype:
        raise TypeError(f"{name}: expected a numpy.ndarray of {dtype}, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        c = "C" if channels is None else channels
        raise ValueError(f"{name}: expected input of shape (N, {c}, H, W), got {x.shape}")
    return check_contiguous(x, "x")


class _OpLayer(Module):
    """A layer that computes with one KernelOp, rebuilt when what it was made for
    changes. The op points into the layer's arrays: a copy of the layer makes its own."""

    def _kernel_op(self, key, arrays, make):
        """The op made by make() for `key` (compared with ==) and `arrays` (the arrays
        it points into, compared with `is`), reused while both stay the same."""
        cached = self.__dict__.get("_op")
        if (cached is None or cached[0] != key
                or any(a is not b for a, b in zip(cached[1], arrays))):
            cached = (key, arrays, make())
            self._op = cached
        return cached[2]

    def _run_forward(self, op, x):
        y = self.workspace("y", (x.shape[0], *op.out_shape), x.dtype)
        op.run_forward(x, y, get_num_threads())
        self._x, self._y = x, y
        return y

    def backward(self, dout, input_grad=True):
        """d(loss)/dx for dout = d(loss)/dy of the last forward (None with input_grad
        False); parameter gradients, if any, are accumulated."""
        x, y = self._x, self._y
        dout = check_array(dout, "dout")
        if dout.shape != y.shape or dout.dtype != y.dtype:
            raise ValueError(f"{type(self).__name__}: dout must be {y.dtype} of shape "
                             f"{y.shape}, got {dout.dtype} {dout.shape}")
        dout = check_contiguous(dout, "dout")
        dx = self.workspace("dx", x.shape, x.dtype) if input_grad else None
        return self._op[2].run_backward(x, y, dout, dx, input_grad, get_num_threads())

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_op", None)
        return state


class _Pool2d(_OpLayer):
    """A pooling window: kernel_size, stride (default: kernel_size) and padding, each an
    int or an (h, w) pair; padding at most half the window, as in PyTorch. Output
    (N, C, OH, OW) with OH = (H + 2 * padding - kernel) // stride + 1 (floor mode), and
    likewise OW. No parameters; float32 or float64, the input's."""

    make_op = None  # the KernelOp class

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = check_pair(kernel_size, "kernel_size", check_int, POSITIVE)
        self.stride = (self.kernel_size if stride is None
                       else check_pair(stride, "stride", check_int, POSITIVE))
        self.padding = check_pair(padding, "padding", check_int, NON_NEGATIVE)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"padding: must be at most half of kernel_size "
                             f"{self.kernel_size}, got {self.padding}")

    def config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _check_window(self, shape):
        """Raise ValueError if the (C, H, W) input is smaller than the padded window."""
        for size, k, p in zip(shape[1:], self.kernel_size, self.padding):
            if size + 2 * p < k:
                raise ValueError(
                    f"{type(self).__name__}: kernel_size {self.kernel_size} is larger than "
                    f"the input's {tuple(shape[1:])} padded by {self.padding}")

    def _new_op(self, rows, dtype, shape):
        self._check_window(shape)
        return self.make_op(dtype, rows, tuple(shape), self.kernel_size, self.stride,
                            self.padding)

    def forward(self, x):
        x = _check_images(self, x)
        key = (x.shape, x.dtype, self.kernel_size, self.stride, self.padding)
        op = self._kernel_op(key, (), lambda: self._new_op(x.shape[0], x.dtype, x.shape[1:]))
        return self._run_forward(op, x)

    # ------------------------------------------------------------ compiled form

    def plan_state(self):
        return ("training", "kernel_size", "stride", "padding")

    def add_to_plan(self, plan, after):
        if len(plan.shape) != 3:
            raise ValueError(f"{type(self).__name__}: expected input of shape (N, C, H, W), "
                             f"got (N, {', '.join(map(str, plan.shape))})")
        plan.add_kernel(self._new_op(plan.rows, plan.dtype, plan.shape))
        return 1


class MaxPool2d(_Pool2d):
    """y = the max of each window of each plane; padded cells never win.

    Backward: each output's gradient goes to the cell that won its window (the first in
    row-major order among equal values), adding up where windows overlap.
    """

    make_op = MaxPoolOp


class AvgPool2d(_Pool2d):
    """y = the mean of each window of each plane, zero padding included in it: the sum of
    the window's input cells / (kh * kw) (PyTorch's count_include_pad=True)."""

    make_op = AvgPoolOp


class GlobalAvgPool2d(_OpLayer):
    """y[n, c] = the mean of plane x[n, c]: (N, C, H, W) -> (N, C). No parameters;
    float32 or float64, the input's."""

    def config(self):
        return {}

    def forward(self, x):
        x = _check_images(self, x)
        op = self._kernel_op((x.shape, x.dtype), (),
                             lambda: GlobalAvgPoolOp(x.dtype, x.shape[0], x.shape[1:]))
        return self._run_forward(op, x)

    # ------------------------------------------------------------ compiled form

    def add_to_plan(self, plan, after):
        if len(plan.shape) != 3:
            raise ValueError(f"GlobalAvgPool2d: expected input of shape (N, C, H, W), got "
                             f"(N, {', '.join(map(str, plan.shape))})")
        plan.add_kernel(GlobalAvgPoolOp(plan.dtype, plan.rows, tuple(plan.shape)))
        return 1
