"""Sequential: layers in a chain, their parameters in one arena."""

import numpy as np

from .. import ops
from .._kernels import activations as _act
from .._kernels import network as _network
from .._threads import get_num_threads
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh, _Activation
from .batchnorm import BatchNorm1d
from .dropout import Dropout
from .linear import Linear
from .module import Module

__all__ = ["Sequential"]

# Layers a compiled plan runs (exact types: a subclass may change what they compute).
_PLAN_LAYERS = (Linear, BatchNorm1d, ReLU, LeakyReLU, Sigmoid, Tanh, Dropout)
_MAX_PLANS = 4  # batch sizes kept compiled (a training batch size, its last batch, ...)


class Sequential(Module):
    """Apply layers in order; backward in reverse.

    On construction every parameter of every layer moves into one arena (`.arena`): one
    buffer of values and one of gradients, weights first. Take references to a layer's
    parameters after building the Sequential. An activation layer right after a Linear
    is fused into the Linear's epilogue. forward returns an array the caller owns.

    A chain of Linear, BatchNorm1d, activation and Dropout layers runs as a compiled
    plan: the whole forward pass, and the whole backward pass, are each one call into
    the kernels, with the results of the layer-by-layer path bit for bit (the plan calls
    the same kernels in the same order). The plan is rebuilt when the batch size, the
    mode or a layer's settings change. Set `compiled = False` to run the layers one by
    one (for code that calls a layer's own forward or backward between them).
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(str(i), layer)
        self.layers = list(layers)
        self.adopt_parameters()
        for layer, after in zip(self.layers, self.layers[1:]):
            fusable = isinstance(after, _Activation) and after.slope >= 0
            if isinstance(layer, Linear) and layer.activation is None and fusable:
                layer.activation, layer.slope = after.activation, after.slope
                after.fused = True
        self.compiled = True
        self._plans = {}
        self._plan = None  # the plan that ran the last forward, if one did

    def __getstate__(self):
        # compiled plans point into this object's arrays: a copy builds its own
        state = self.__dict__.copy()
        state["_plans"], state["_plan"] = {}, None
        return state

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def forward(self, x):
        plan = self._plan_for(x)
        self._plan = plan
        if plan is not None:
            return plan.forward(x, get_num_threads()).copy()
        for layer in self.layers:
            x = layer.forward(x)
        return x.copy()

    def backward(self, dout, input_grad=True):
        """Backpropagate dout; returns d(loss)/d(input), or None with input_grad=False
        (which spares the first layer's input-gradient GEMM)."""
        plan = self._plan
        if plan is not None:
            dout = ops._input(dout, "dout")
            if dout.dtype != plan.dtype:
                raise TypeError(f"dout: expected dtype {plan.dtype}, got {dout.dtype}")
            if dout.shape != (plan.rows, plan.d_out):
                raise ValueError(f"dout: expected shape ({plan.rows}, {plan.d_out}), got "
                                 f"{dout.shape}")
            dout = ops._contiguous(dout, "dout")
            return plan.backward(dout, bool(input_grad), get_num_threads())
        if self.layers and hasattr(self.layers[0], "input_grad"):
            self.layers[0].input_grad = input_grad
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout if input_grad else None

    # ------------------------------------------------------------ compiled plans

    def _plan_checks(self):
        """What a plan depends on besides the batch size and thread count: (object,
        attribute, value) for the layers' settings and mode, and their arrays (which
        must stay the same objects). None when a layer has no compiled form."""
        checks = [(self, "training", self.training)]
        for layer in self.layers:
            if type(layer) not in _PLAN_LAYERS:
                return None
            if isinstance(layer, Linear):
                names = ("training", "weight", "bias", "activation", "slope")
            elif isinstance(layer, BatchNorm1d):
                names = ("training", "weight", "bias", "running_mean", "running_var",
                         "momentum", "eps")
            elif isinstance(layer, Dropout):
                names = ("training", "p", "seed", "step")
            else:
                names = ("training", "fused", "slope")
            checks += [(layer, name, getattr(layer, name)) for name in names]
        return checks

    def _plan_for(self, x):
        """The compiled plan for input x, or None when the layer-by-layer path must run
        (an unsupported layer, an input it does not take as is, an empty batch)."""
        if (not self.compiled or not self.layers or self.arena is None
                or type(x) is not np.ndarray
                or x.ndim != 2 or x.dtype != self.arena.data.dtype
                or not x.flags.c_contiguous or x.shape[0] == 0):
            return None
        key = x.shape
        entry = self._plans.get(key)
        if entry is not None and _network.unchanged(entry[0]):
            return entry[1]
        checks = self._plan_checks()
        if checks is None:
            return None
        try:
            plan = self._build_plan(x.shape, x.dtype)
        except ValueError:  # shapes the layers reject: their own errors say why
            return None
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[key] = (checks, plan)
        return plan

    def _build_plan(self, shape, dtype):
        rows, d_in = shape
        plan = _network.Plan(rows, d_in, np.dtype(dtype), len(self.layers))
        codes = _act.ACTIVATIONS
        for layer in self.layers:
            if isinstance(layer, Linear):
                if plan.d_out != layer.in_features:
                    raise ValueError("input features differ")
                bias = layer.bias
                plan.add_linear(
                    layer.out_features, layer.weight, layer.weight.grad, bias,
                    None if bias is None else bias.grad,
                    None if layer.activation is None else codes[layer.activation],
                    layer.slope, getattr(layer, "_zero_bias", None))
            elif isinstance(layer, BatchNorm1d):
                if plan.d_out != layer.num_features:
                    raise ValueError("features differ")
                plan.add_batchnorm(layer.weight, layer.bias, layer.weight.grad,
                                   layer.bias.grad, layer.running_mean, layer.running_var,
                                   layer.training, layer.momentum, layer.eps)
            elif isinstance(layer, Dropout):
                p = layer.p
                active = layer.training and p != 0
                threshold = min(round(p * 2**32), 2**32 - 1)
                plan.add_dropout(layer.seed, layer.step, active, threshold,
                                 1 / (1 - p) if p < 1 else 0.0, p == 1)
            elif not layer.fused:
                plan.add_activation(codes[layer.activation], layer.slope,
                                    isinstance(layer, LeakyReLU))
        return plan
