"""Batch normalization: per feature of a (N, num_features) batch (BatchNorm1d), per
channel of an (N, C, H, W) batch (BatchNorm2d)."""

import numpy as np

from .. import ops
from .._checks import check_eps, check_finite
from .._kernels.batchnorm2d import BatchNorm2dOp
from .kernel_layer import KernelLayer, check_4d, check_images
from .linear import _float_dtype, _positive_int
from .module import Module

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    """What the batch normalizations share: arguments, parameters, running statistics.

    weight (gamma) starts at 1, bias (beta) at 0; neither is penalized or decayed by
    default (kind "norm"). Buffers running_mean (0) and running_var (1), one value per
    feature or channel.
    """

    rank_statistics = ("running_mean", "running_var")

    def __init__(self, num_features, momentum=0.1, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        momentum = float(momentum)
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum: must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.eps = check_eps(eps)
        dtype = _float_dtype(dtype)
        d = self.num_features
        self.add_parameters(dtype, weight=(np.ones(d), "norm"), bias=(np.zeros(d), "norm"))
        self.add_buffer("running_mean", np.zeros(d, dtype))
        self.add_buffer("running_var", np.ones(d, dtype))

    def check_state(self, prefix, state):
        """Running statistics must be finite, and running_var >= 0 (its square root
        normalizes in eval mode); a name `state` lacks (strict=False) is not checked."""
        for name in ("running_mean", "running_var"):
            if prefix + name in state:
                check_finite(np.asarray(state[prefix + name]), prefix + name)
        var = state.get(prefix + "running_var")
        if var is not None and (np.asarray(var) < 0).any():
            raise ValueError(f"{prefix}running_var: must be >= 0 (a variance)")

    def config(self):
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps,
                "dtype": str(self.weight.dtype)}

    def extra_repr(self):
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"

    def plan_state(self):
        return ("training", "weight", "bias", "running_mean", "running_var", "momentum",
                "eps")


class BatchNorm1d(_BatchNorm):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per feature.

    Train mode: mean and the BIASED variance of the batch normalize it; the running
    statistics move towards the batch's, weighted by `momentum`
    (running = (1 - momentum) * running + momentum * batch), with the UNBIASED variance
    going into running_var, as in PyTorch. Eval mode: the running statistics only.
    A batch of one row in train mode raises ValueError. weight (gamma) starts at 1, bias
    (beta) at 0; neither is penalized or decayed by default (kind "norm").
    """

    def forward(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm1d: expected input of shape (N, {self.num_features}), got "
                f"{getattr(x, 'shape', type(x).__name__)}"
            )
        y, mean, inv_std = ops.batchnorm_forward(
            x, self.weight, self.bias, self.running_mean, self.running_var,
            training=self.training, momentum=self.momentum, eps=self.eps,
            out=self.workspace("y", x.shape, self.weight.dtype))
        self._cache = (x, mean, inv_std, self.training)
        return y

    def backward(self, dout, input_grad=True):
        x, mean, inv_std, training = self._cache
        dx, dgamma, dbeta = ops.batchnorm_backward(
            dout, x, self.weight, mean, inv_std, training=training,
            out=self.workspace("dx", x.shape, self.weight.dtype))
        if self.weight.requires_grad:
            self.weight.grad += dgamma
        if self.bias.requires_grad:
            self.bias.grad += dbeta
        return dx if input_grad else None

    # ------------------------------------------------------------ compiled form

    def add_to_plan(self, plan, after):
        """One op; an activation `after` it that offers an epilogue runs in its
        normalizing pass."""
        if plan.shape != (self.num_features,):
            raise ValueError(f"BatchNorm1d: expected input of shape (N, {self.num_features}), "
                             f"got {('N', *plan.shape)}")
        fused = None if after is None else after.epilogue()
        act, slope = fused if fused is not None else (None, 0.0)
        gamma, beta = self.weight, self.bias
        plan.add_batchnorm(gamma, beta, gamma.grad if gamma.requires_grad else None,
                           beta.grad if beta.requires_grad else None, self.running_mean,
                           self.running_var, self.training, self.momentum, self.eps, act,
                           slope)
        return 1 if fused is None else 2


class BatchNorm2d(_BatchNorm, KernelLayer):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per channel of an (N, C, H, W)
    batch, the statistics taken over its N * H * W values.

    The same semantics as BatchNorm1d's (which it equals on x.transpose(0, 2, 3, 1)
    reshaped to (N * H * W, C)): train mode normalizes with the batch mean and BIASED
    variance and moves the running statistics towards the batch's by `momentum`
    (running_var towards the UNBIASED variance, n = N * H * W); eval mode uses the
    running statistics only. Train mode with N * H * W < 2 raises ValueError.
    """

    def _output_shape(self, shape):
        check_4d(self, shape, self.num_features)
        n, _, h, w = shape
        if self.training and n * h * w < 2:
            raise ValueError(f"BatchNorm2d: training needs more than 1 value per channel, "
                             f"got input of shape {tuple(shape)}")
        return shape[1:]

    def _new_op(self, rows, dtype, in_shape):
        gamma, beta = self.weight, self.bias
        return BatchNorm2dOp(
            dtype, rows, in_shape, gamma, beta, gamma.grad if gamma.requires_grad else None,
            beta.grad if beta.requires_grad else None, self.running_mean, self.running_var,
            self.training, self.momentum, self.eps)

    def forward(self, x):
        gamma, beta = self.weight, self.bias
        return self._forward(
            check_images(self, x, gamma.dtype),
            (self.training, self.momentum, self.eps, gamma.requires_grad, beta.requires_grad),
            (gamma, beta, gamma.grad, beta.grad, self.running_mean, self.running_var))
