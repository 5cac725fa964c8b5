"""Residual: y = block(x) + shortcut(x), ResNet's skip connection."""

import numpy as np

from .module import Module, has_own_compiled_form

__all__ = ["Residual"]


class Residual(Module):
    """y = block(x) + x, or block(x) + shortcut(x) with a shortcut (e.g. a stride-2 1x1
    Conv2d and a BatchNorm2d where the block changes the shape). Both must give outputs
    of one shape. The gradient reaching x is the sum of both branches'.

    Like Sequential, a Residual built from new layers keeps their parameters in one arena
    of its own (a model that takes it adopts them). In a compiled plan both branches run
    inside the plan, and an activation right after the Residual runs in its sum's
    epilogue (ResNet's relu(block(x) + x)); the layer itself computes the sum alone."""

    def __init__(self, block, shortcut=None):
        super().__init__()
        self.block = self.add_module("block", block)
        self.shortcut = None if shortcut is None else self.add_module("shortcut", shortcut)
        self.adopt_parameters()

    def config(self):
        return {}

    def forward(self, x):
        yb = self.block.forward(x)
        ys = x if self.shortcut is None else self.shortcut.forward(x)
        if yb.shape != ys.shape:
            raise ValueError(f"Residual: the block gives {yb.shape}, the "
                             f"{'shortcut' if self.shortcut is not None else 'input'} is "
                             f"{ys.shape}; add a shortcut that gives the block's shape")
        if yb.dtype != ys.dtype:
            raise TypeError(f"Residual: the block gives {yb.dtype}, the shortcut {ys.dtype}")
        y = self.workspace("y", yb.shape, yb.dtype)
        np.add(yb, ys, out=y)
        self._y = y
        return y

    def backward(self, dout, input_grad=True):
        if dout.shape != self._y.shape:
            raise ValueError(f"Residual: expected dout of shape {self._y.shape}, got "
                             f"{dout.shape}")
        dxb = self.block.backward(dout)
        dxs = dout if self.shortcut is None else self.shortcut.backward(dout)
        if not input_grad:
            return None
        dx = self.workspace("dx", dxb.shape, dxb.dtype)
        np.add(dxb, dxs, out=dx)
        return dx

    # ------------------------------------------------------------ compiled form

    def add_to_plan(self, plan, after):
        """The block and the shortcut as branches of one residual op; an activation
        `after` the sum runs in its epilogue."""
        branches = []
        for part in (self.block, self.shortcut):
            if part is None:
                branches.append(None)
                continue
            if not has_own_compiled_form(part):
                return NotImplemented
            branch = plan.branch(sum(1 for _ in part.modules()))
            if part.add_to_plan(branch, None) is NotImplemented:
                return NotImplemented
            branches.append(branch)
        fused = None if after is None else after.epilogue()
        act, slope = fused if fused is not None else (None, 0.0)
        plan.add_residual(branches[0], branches[1], act, slope)
        return 1 if fused is None else 2
