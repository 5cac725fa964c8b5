"""Stochastic gradient descent, with momentum and Nesterov momentum."""

from .._kernels import optim as _k
from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum and L2 weight decay, as torch.optim.SGD.

    With g = grad + weight_decay * p:
        momentum == 0:  p -= lr * g
        momentum > 0:   v = momentum * v + g;  p -= lr * v
        nesterov:       v = momentum * v + g;  p -= lr * (g + momentum * v)
    The seed lecture writes momentum as v = mu * v - lr * dx; x += v. With a constant
    learning rate the two produce the same iterates (its v is -lr times this one); when
    the learning rate changes they differ slightly, as in PyTorch.
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        if nesterov and not momentum:
            raise ValueError("nesterov=True needs momentum > 0")
        super().__init__(params, lr=lr, momentum=momentum, nesterov=bool(nesterov),
                         weight_decay=weight_decay)
        self.state_names = ("velocity",) if any(g["momentum"] for g in self.param_groups) else ()

    def _update(self, group, values, grads, state, threads):
        velocity = state["velocity"] if group["momentum"] else None
        _k.sgd(values, grads, velocity, group["lr"], group["momentum"], group["weight_decay"],
               group["nesterov"], threads)
