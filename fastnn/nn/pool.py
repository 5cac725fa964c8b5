"""Pooling over the planes of (N, C, H, W) images: MaxPool2d, AvgPool2d, GlobalAvgPool2d."""


from .._checks import NON_NEGATIVE, POSITIVE, check_int, check_pair
from .._kernels.pool import AvgPoolOp, GlobalAvgPoolOp, MaxPoolOp
from .kernel_layer import KernelLayer, check_4d, check_images

__all__ = ["AvgPool2d", "GlobalAvgPool2d", "MaxPool2d"]


class _Pool2d(KernelLayer):
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
        check_4d(self, shape)
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
        return self._forward(check_images(self, x),
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


class GlobalAvgPool2d(KernelLayer):
    """y[n, c] = the mean of plane x[n, c]: (N, C, H, W) -> (N, C). No parameters;
    float32 or float64, the input's."""

    def config(self):
        return {}

    def _output_shape(self, shape):
        check_4d(self, shape)
        return shape[1:2]

    def _new_op(self, rows, dtype, in_shape):
        return GlobalAvgPoolOp(dtype, rows, in_shape)

    def forward(self, x):
        return self._forward(check_images(self, x))
