"""Adam and AdamW."""

import math
from typing import ClassVar

from .._checks import Interval, check_float_in
from .._kernels import optim as _k
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam with bias correction, as torch.optim.Adam. At step t:

        g = grad + weight_decay * p            (L2 penalty through the gradient)
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g**2
        p -= lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    This is the seed lecture's Adam with its bias correction; eps is added after the
    square root.
    """

    state_names = ("m", "v")
    non_negative_state = ("v",)
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    constraints: ClassVar[dict] = {**Optimizer.constraints, "betas": Interval(0, 1, closed="left")}
    pairs = ("betas",)

    def _check_dtype(self, group):
        """Also the largest step size, lr / (1 - beta1) at the first step, and AdamW's
        lr * weight_decay, in the parameters' dtype."""
        super()._check_dtype(group)
        lr, wd = group["lr"], group["weight_decay"]
        for dtype in self._dtypes(group):
            check_float_in(lr / (1 - group["betas"][0]), "lr / (1 - betas[0])", dtype)
            if self.decoupled:
                check_float_in(lr * wd, "lr * weight_decay", dtype)

    def _update(self, group, values, grads, state, threads):
        b1, b2 = group["betas"]
        t = self.step_count
        lr, wd = group["lr"], group["weight_decay"]
        step_size = lr / (1 - b1**t)
        inv_sqrt_bc2 = 1 / math.sqrt(1 - b2**t)
        if self.decoupled:
            l2, decay = 0.0, 1 - lr * wd
        else:
            l2, decay = wd, 1.0
        _k.adam(values, grads, state["m"], state["v"], step_size, b1, b2, group["eps"],
                inv_sqrt_bc2, l2, decay, threads)


class AdamW(Adam):
    """Adam with decoupled weight decay, as torch.optim.AdamW. At step t:

        p *= 1 - lr * weight_decay             (decay, not through the gradient)
        then Adam's update with g = grad.
    """

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
