"""Inverted dropout with reproducible, thread-count independent masks."""

import numpy as np

from .. import ops
from .._seed import resolve_seed
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability p (the DROP probability) in train mode and
    scale the rest by 1 / (1 - p); the identity in eval mode.

    (The seed lecture's plain dropout scales by p at test time instead; inverted dropout
    gives the same expectations and leaves inference untouched, as PyTorch does.)
    The mask of the k-th train-mode forward is a function of (seed, k, element index)
    only: the same seed gives the same masks for any thread count. seed=None draws one
    (the next of fastnn.manual_seed's stream after it was called).
    """

    rank_seeds = ("seed",)

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        p = float(p)
        if not 0 <= p <= 1:
            raise ValueError(f"p: the drop probability must be in [0, 1], got {p}")
        self.p = p
        seed = resolve_seed(seed)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int or None, got {seed!r}")
        self.add_buffer("seed", np.array(seed, np.uint64))
        self.add_buffer("step", np.array(0, np.int64))  # train-mode forwards so far
        self._active_step = None

    def config(self):
        # The seed is state (a buffer, saved with the weights), not architecture.
        return {"p": self.p}

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x):
        if not self.training or self.p == 0:
            self._active_step = None
            return x
        self._active_step = int(self.step)
        self.step += 1
        return ops.dropout(x, self.p, int(self.seed), self._active_step,
                           out=self.workspace("y", x.shape, x.dtype))

    def backward(self, dout, input_grad=True):
        if not input_grad:
            return None
        if self._active_step is None:
            return dout
        return ops.dropout(dout, self.p, int(self.seed), self._active_step,
                           out=self.workspace("dx", dout.shape, dout.dtype))

    # ------------------------------------------------------------ compiled form

    def plan_state(self):
        return ("training", "p", "seed", "step")

    def add_to_plan(self, plan, after):
        p = self.p
        plan.add_dropout(self.seed, self.step, self.training and p != 0,
                         min(round(p * 2**32), 2**32 - 1), 1 / (1 - p) if p < 1 else 0.0,
                         p == 1)
        return 1
