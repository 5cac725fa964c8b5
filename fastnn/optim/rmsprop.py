"""RMSProp."""

from typing import ClassVar

from .._checks import Interval
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

    constraints: ClassVar[dict] = {**Optimizer.constraints, "alpha": Interval(0, 1, closed="left")}

    def _update(self, group, values, grads, state, threads):
        _k.rmsprop(values, grads, state["cache"], group["lr"], group["alpha"], group["eps"],
                   group["weight_decay"], threads)
