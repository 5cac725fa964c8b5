"""Adagrad."""

from .._kernels import optim as _k
from .optimizer import Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """Adagrad, as torch.optim.Adagrad (without lr decay):

        g = grad + weight_decay * p;  cache += g**2;  p -= lr * g / (sqrt(cache) + eps)

    The seed lecture's form is the same, eps added outside the square root.
    """

    state_names = ("cache",)
    non_negative_state = ("cache",)

    def __init__(self, params, lr, eps=1e-10, weight_decay=0.0):
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay)

    def _update(self, group, values, grads, state, threads):
        _k.adagrad(values, grads, state["cache"], group["lr"], group["eps"],
                   group["weight_decay"], threads)
