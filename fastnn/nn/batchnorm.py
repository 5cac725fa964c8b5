"""Batch normalization over the rows of a (N, num_features) batch."""

import numpy as np

from .. import ops
from .._checks import check_eps
from .linear import _float_dtype, _positive_int
from .module import Module

__all__ = ["BatchNorm1d"]


class BatchNorm1d(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per feature.

    Train mode: mean and the BIASED variance of the batch normalize it; the running
    statistics move towards the batch's, weighted by `momentum`
    (running = (1 - momentum) * running + momentum * batch), with the UNBIASED variance
    going into running_var, as in PyTorch. Eval mode: the running statistics only.
    A batch of one row in train mode raises ValueError. weight (gamma) starts at 1, bias
    (beta) at 0; neither is penalized or decayed by default (kind "norm").
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

    def config(self):
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps,
                "dtype": str(self.weight.dtype)}

    def extra_repr(self):
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"

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

    def plan_state(self):
        return ("training", "weight", "bias", "running_mean", "running_var", "momentum",
                "eps")

    def add_to_plan(self, plan, after):
        if plan.shape != (self.num_features,):
            raise ValueError(f"BatchNorm1d: expected input of shape (N, {self.num_features}), "
                             f"got {('N', *plan.shape)}")
        gamma, beta = self.weight, self.bias
        plan.add_batchnorm(gamma, beta, gamma.grad if gamma.requires_grad else None,
                           beta.grad if beta.requires_grad else None, self.running_mean,
                           self.running_var, self.training, self.momentum, self.eps)
        return 1
