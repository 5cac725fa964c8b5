"""RMSProp."""

import math

from .._kernels import optim as _k
from .optimizer import Optimizer

__all__ = ["RMSProp"]


class RMSProp(Optimizer):
    """RMSProp, as torch.optim.RMSprop (not centered, no momentum):

        g = grad + weight_decay * p
        cache = alpha * cache + (1 - alpha) * g**2;  p -= lr * g / (sqrt(cache) + eps)

    The seed lecture's decay_rate is alpha; eps is added outside the square root.
    """

    state_names = ("cache",)
    non_negative_state = ("cache",)

    def __init__(self, params, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay)

    def _check(self, name, value):
        if name == "alpha":
            value = float(value)
            if not (math.isfinite(value) and 0 <= value < 1):
                raise ValueError(f"alpha: must be in [0, 1), got {value}")
            return value
        return super()._check(name, value)

    def _update(self, group, values, grads, state, threads):
        _k.rmsprop(values, grads, state["cache"], group["lr"], group["alpha"], group["eps"],
                   group["weight_decay"], threads)
