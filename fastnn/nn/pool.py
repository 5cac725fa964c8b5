"""Pooling over the planes of (N, C, H, W) images: MaxPool2d, AvgPool2d, GlobalAvgPool2d.

Also what BatchNorm2d shares with them: the base of layers that run one KernelOp
(_OpLayer) and the checks of image input (_check_images, _check_4d).
"""

import numpy as np

from .._checks import NON_NEGATIVE, POSITIVE, check_array, check_contiguous, check_int, check_pair
from .._kernels.pool import AvgPoolOp, GlobalAvgPoolOp, MaxPoolOp
from .._threads import get_num_threads
from .module import Module

__all__ = ["AvgPool2d", "GlobalAvgPool2d", "MaxPool2d"]


def _check_images(layer, x, dtype=None):
    """x as a C-contiguous ndarray (a copy if it was not contiguous) of `dtype` when
    given, else of float32 or float64."""
    if dtype is None:
        x = check_array(x, "x")
    elif not isinstance(x, np.ndarray) or x.dtype != dtype:
        raise TypeError(f"{type(layer).__name__}: expected a numpy.ndarray of {dtype}, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    return check_contiguous(x, "x")


def _check_4d(layer, shape, channels="C"):
    """Raise ValueError unless `shape` is (N, channels, H, W)."""
    if len(shape) != 4 or (channels != "C" and shape[1] != channels):
        got = ", ".join(map(str, shape))
        raise ValueError(f"{type(layer).__name__}: expected input of shape "
                         f"(N, {channels}, H, W), got ({got})")


class _OpLayer(Module):
    """A layer that computes with one KernelOp. A subclass defines
    `_output_shape(shape)` (the per-sample output shape for an input of `shape`, N
    included; ValueError for one it refuses) and `_new_op(rows, dtype, in_shape)`; its
    forward calls `_forward(x, key, arrays)`.

    The op is rebuilt when what it was made for changes. It points into the layer's
    arrays: a copy of the layer makes its own.
    """

    def _forward(self, x, key=(), arrays=()):
        """y for x (validated but for its shape): the op made for x's shape and dtype,
        `key` (values, compared with ==) and `arrays` (the arrays the op points into,
        compared with `is`) is reused while they stay the same."""
        y = self.workspace("y", (len(x), *self._output_shape(x.shape)), x.dtype)
        self._x, self._y = x, y
        if len(x) == 0:  # nothing to compute, no op to make
            return y
        key = (x.shape, x.dtype, *key)
        cached = self.__dict__.get("_op")
        if (cached is None or cached[0] != key
                or any(a is not b for a, b in zip(cached[1], arrays))):
            cached = (key, arrays, self._new_op(len(x), x.dtype, x.shape[1:]))
            self._op = cached
        cached[2].run_forward(x, y, get_num_threads())
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
        if len(x) == 0:
            return dx
        return self._op[2].run_backward(x, y, dout, dx, input_grad, get_num_threads())

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_op", None)
        return state

    # ------------------------------------------------------------ compiled form

    def add_to_plan(self, plan, after):
        """The layer's op, made for the plan's batch; none of these layers computes the
        next one too."""
        shape = tuple(plan.shape)
        self._output_shape((plan.rows, *shape))
        plan.add_kernel(self._new_op(plan.rows, plan.dtype, shape))
        return 1


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

    def _output_shape(self, shape):
        _check_4d(self, shape)
        if any(size + 2 * p < k for size, k, p in zip(shape[2:], self.kernel_size,
                                                       self.padding)):
            raise ValueError(
                f"{type(self).__name__}: kernel_size {self.kernel_size} is larger than "
                f"the input's {tuple(shape[2:])} padded by {self.padding}")
        return (shape[1], *((size + 2 * p - k) // s + 1 for size, k, s, p in zip(
            shape[2:], self.kernel_size, self.stride, self.padding)))

    def _new_op(self, rows, dtype, in_shape):
        return self.make_op(dtype, rows, in_shape, self.kernel_size, self.stride,
                            self.padding)

    def forward(self, x):
        return self._forward(_check_images(self, x),
                             (self.kernel_size, self.stride, self.padding))

    def plan_state(self):
        return ("training", "kernel_size", "stride", "padding")


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

    def _output_shape(self, shape):
        _check_4d(self, shape)
        return shape[1:2]

    def _new_op(self, rows, dtype, in_shape):
        return GlobalAvgPoolOp(dtype, rows, in_shape)

    def forward(self, x):
        return self._forward(_check_images(self, x))
