"""2-D convolution over (N, C, H, W) images: im2col + GEMM with a fused epilogue."""

import numpy as np

from .._checks import NON_NEGATIVE, POSITIVE, check_choice, check_int, check_pair
from .._kernels.conv import ConvOp, output_size
from .._seed import resolve_seed
from .kernel_layer import KernelLayer, check_images
from .linear import _float_dtype

__all__ = ["Conv2d"]


class Conv2d(KernelLayer):
    """y[n, o] = bias[o] + sum over c in o's group, i < kh, j < kw of
    weight[o, c, i, j] * x[n, g * C/groups + c, oh*sh - ph + i*dh, ow*sw - pw + j*dw],
    zero outside the image (cross-correlation, as PyTorch's Conv2d).

    x (N, in_channels, H, W) -> y (N, out_channels, Ho, Wo) with
    Ho = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1 (Wo alike). kernel_size, stride,
    padding and dilation are an int or an (h, w) pair. weight has PyTorch's shape
    (out_channels, in_channels // groups, kh, kw); bias (out_channels,).
    init="he": weight ~ N(0, 2 / fan_in), "xavier": N(0, 2 / (fan_in + fan_out)), with
    fan_in = in_channels // groups * kh * kw and fan_out = out_channels // groups * kh * kw;
    biases start at zero; seed=None: the next of fastnn.manual_seed's stream after it was
    called, else a random one. In a compiled plan an activation right after a Conv2d runs in
    its GEMM epilogue; the layer itself always computes the convolution alone.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True,
                 init: str = "he", seed=None, dtype=np.float32):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", POSITIVE)
        self.out_channels = check_int(out_channels, "out_channels", POSITIVE)
        self.kernel_size = check_pair(kernel_size, "kernel_size", check_int, POSITIVE)
        self.stride = check_pair(stride, "stride", check_int, POSITIVE)
        self.padding = check_pair(padding, "padding", check_int, NON_NEGATIVE)
        self.dilation = check_pair(dilation, "dilation", check_int, POSITIVE)
        self.groups = check_int(groups, "groups", POSITIVE)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups: {self.groups} must divide in_channels "
                             f"({self.in_channels}) and out_channels ({self.out_channels})")
        self.init = check_choice(init, "init", ("he", "xavier"))
        dtype = _float_dtype(dtype)
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        fan_out = self.out_channels // self.groups * kh * kw
        std = np.sqrt(2.0 / (fan_in if init == "he" else fan_in + fan_out))
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        weight = np.random.default_rng(resolve_seed(seed)).standard_normal(shape) * std
        params = {"weight": (weight, "weight")}
        if bias:
            params["bias"] = (np.zeros(self.out_channels), "bias")
        self.add_parameters(dtype, **params)
        if not bias:
            self.bias = None

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation),
                "groups": self.groups, "bias": self.bias is not None, "init": self.init,
                "dtype": str(self.weight.dtype)}

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, "
                f"dtype={self.weight.dtype}")

    def _output_shape(self, shape):
        """(out_channels, Ho, Wo) for input of shape (N, C, H, W); ValueError for a
        shape this layer cannot take."""
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"Conv2d: expected input of shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(shape)}")
        out = [output_size(size, k, s, p, d) for size, k, s, p, d in
               zip(shape[2:], self.kernel_size, self.stride, self.padding, self.dilation)]
        if min(out) < 1:
            raise ValueError(
                f"Conv2d: kernel {self.kernel_size} with dilation {self.dilation} is larger "
                f"than the input {tuple(shape[2:])} padded by {self.padding}")
        return (self.out_channels, *out)

    def _new_op(self, rows, dtype, in_shape, act=None, slope=0.0):
        w, b = self.weight, self.bias
        return ConvOp(rows, tuple(in_shape), w, w.grad if w.requires_grad else None, b,
                      None if b is None or not b.requires_grad else b.grad, self.stride,
                      self.padding, self.dilation, self.groups, act, slope)

    def forward(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise ValueError(f"Conv2d: expected input of shape (N, {self.in_channels}, H, W), "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
        w, b = self.weight, self.bias
        # the op points into the parameter and gradient arrays, which a container that
        # adopts this layer replaces
        return self._forward(
            check_images(self, x, w.dtype),
            (w.requires_grad, None if b is None else b.requires_grad),
            (w, w.grad, b, None if b is None else b.grad))

    # ------------------------------------------------------------ compiled form

    def plan_state(self):
        return ("training", "weight", "bias")

    def add_to_plan(self, plan, after):
        """One ConvOp; an activation `after` it that offers an epilogue runs in it."""
        self._output_shape((plan.rows, *plan.shape))
        if np.dtype(plan.dtype) != self.weight.dtype:
            raise TypeError(f"Conv2d: expected input of dtype {self.weight.dtype}, got "
                            f"{np.dtype(plan.dtype)}")
        fused = None if after is None else after.epilogue()
        act, slope = fused if fused is not None else (None, 0.0)
        plan.add_kernel(self._new_op(plan.rows, plan.dtype, plan.shape, act, slope))
        return 1 if fused is None else 2
