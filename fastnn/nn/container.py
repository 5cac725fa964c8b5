"""Sequential: layers in a chain, run one by one or as one compiled plan."""

import inspect

import numpy as np

from .._checks import check_array, check_contiguous
from .._kernels import network as _network
from .._threads import kernel_threads
from .module import Module, check_input, has_own_compiled_form

__all__ = ["Sequential"]

_MAX_PLANS = 4  # batch sizes kept compiled (a training batch size, its last batch, ...)


_TAKES_INPUT_GRAD = {}


def _takes_input_grad(layer):
    """Whether layer.backward accepts input_grad (a Module subclass written against the
    one-argument form does not)."""
    cls = type(layer)
    if cls not in _TAKES_INPUT_GRAD:
        params = inspect.signature(cls.backward).parameters
        _TAKES_INPUT_GRAD[cls] = "input_grad" in params or any(
            p.kind is p.VAR_KEYWORD for p in params.values())
    return _TAKES_INPUT_GRAD[cls]


class Sequential(Module):
    """Apply layers in order; backward in reverse.

    Parameters: when built, the Sequential moves into one arena of its own (`.arena`:
    one buffer of values, one of gradients, weights first) every parameter that no
    other container holds — those of new layers and of containers nested in it. A
    layer that already belongs to a model keeps its parameters where they are, and
    this Sequential works on views of them: `Sequential(*list(model)[:-1])` and
    `model[a:b]` share `model`'s layers and arena, and an optimizer made for `model`
    keeps training them. Take references to a new layer's parameters after building
    the Sequential. forward returns an array the caller owns.

    Compiled plans: when every layer describes its compiled form (Module.add_to_plan),
    the whole forward pass, and the whole backward pass, are each one call into the
    kernels, with the results of the layer-by-layer path bit for bit. There an
    activation right after a Linear runs in the Linear's GEMM epilogue (after a
    BatchNorm1d, in its normalizing pass), and a Dropout right after a ReLU works over
    the ReLU's output and takes both gradients from its own; the layers themselves are
    never changed, and each computes its own formula wherever it is used. A plan is
    rebuilt when the batch size, the mode, a layer's settings or a parameter's
    requires_grad change. Set `compiled = False` to run the layers one by one.

    Threads: forward and backward hold the lock this Sequential shares with its layers
    (see Module), so threads that share it, or a layer of it, take turns; the array
    forward returns is the caller's own.
    """

    def __init__(self, *layers):
        super().__init__()
        self.layers = []
        for layer in layers:
            self.add_module(str(len(self.layers)), layer)
            self.layers.append(layer)
        self.adopt_parameters()
        self.compiled = True
        self._plans = {}
        self._plan = None  # the plan that ran the last forward, if one did

    def append(self, layer):
        """Add a layer at the end; returns self. A new layer's parameters join this
        model where they are (an arena of their own, held by this Sequential):
        parameters already in this model's arena do not move, so an optimizer made
        before keeps training them (build a new one to train the new layer too)."""
        self.add_module(str(len(self.layers)), layer)
        self.layers.append(layer)
        for arena in layer.arenas():
            if arena.holder is None:
                arena.holder = self
        self._plans.clear()
        self._plan = None
        return self

    def __getstate__(self):
        # compiled plans point into this object's arrays: a copy builds its own
        state = super().__getstate__()
        state["_plans"], state["_plan"] = {}, None
        state.pop("_assigning", None)
        return state

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            part = Sequential(*self.layers[i])
            part.training = self.training  # the layers keep their own modes
            return part
        return self.layers[i]

    def forward(self, x):
        """x (N, ...) -> the last layer's output. x must be an ndarray of the
        parameters' dtype, if there are any (TypeError otherwise: it is never cast)."""
        dtype = self.param_dtype()
        if (not isinstance(x, np.ndarray) or x.dtype != dtype) and any(
                True for _ in self.parameters()):
            check_input(self, x, dtype)
        plan = self._plan_for(x)
        self._plan = plan
        if plan is not None:
            y = plan.forward(x if x.ndim == 2 else x.reshape(x.shape[0], -1),
                             kernel_threads())
            return (y if len(plan.shape) == 1 else y.reshape(plan.rows, *plan.shape)).copy()
        for layer in self.layers:
            x = layer.forward(x)
        return np.array(x)

    def _zero_grad_for_step(self):
        """The gradients are zeroed by the next backward: a compiled plan that writes
        every parameter's gradient writes them (a Linear's weight gradient is then a
        GEMM with beta = 0, and no pass fills the arena with zeros first); otherwise
        zero_grad runs then. Until that backward, the gradients hold old values."""
        self._zero_due = True

    def zero_grad(self):
        self._zero_due = False
        super().zero_grad()

    def _assigns(self, plan):
        """Whether plan.backward(assign=True) writes the gradient of every parameter of
        this model, and nothing else (cached for the last plan asked about)."""
        cached = self.__dict__.get("_assigning")
        if cached is None or cached[0] is not plan:
            written = plan.assigns()
            params = list(self.parameters())
            ok = written is not None and all(p.requires_grad for p in params) and written == {
                (p.grad.__array_interface__["data"][0], p.grad.nbytes) for p in params}
            cached = self._assigning = (plan, ok)
        return cached[1]

    def backward(self, dout, input_grad=True):
        """Backpropagate dout; returns d(loss)/d(input), or None with input_grad=False
        (which spares the first layer's input-gradient GEMM)."""
        plan = self._plan
        zero = self.__dict__.get("_zero_due", False)
        if plan is not None:
            dout = check_array(dout, "dout")
            if dout.dtype != plan.dtype:
                raise TypeError(f"dout: expected dtype {plan.dtype}, got {dout.dtype}")
            if dout.shape != (plan.rows, *plan.shape):
                raise ValueError(f"dout: expected shape {(plan.rows, *plan.shape)}, got "
                                 f"{dout.shape}")
            dout = check_contiguous(dout, "dout")
            assign = False
            if zero:
                assign = self._assigns(plan)
                if not assign:
                    self.zero_grad()
                self._zero_due = False
            dx = plan.backward(dout if dout.ndim == 2 else dout.reshape(plan.rows, -1),
                               bool(input_grad), kernel_threads(), assign)
            if dx is None or len(plan.in_shape) == 1:
                return dx
            return dx.reshape(plan.rows, *plan.in_shape)
        if zero:
            self.zero_grad()
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if i == 0 and not input_grad and _takes_input_grad(layer):
                layer.backward(dout, input_grad=False)
                return None
            dout = layer.backward(dout)
        return dout if input_grad else None

    # ------------------------------------------------------------ compiled form

    def add_to_plan(self, plan, after):
        """The layers' ops, in order (a nested Sequential runs inside its parent's
        plan); NotImplemented when one of them has no compiled form."""
        layers = self.layers
        i = 0
        while i < len(layers):
            after_i = layers[i + 1] if i + 1 < len(layers) else None
            if not has_own_compiled_form(layers[i]) or (
                    after_i is not None and not has_own_compiled_form(after_i)):
                return NotImplemented
            taken = layers[i].add_to_plan(plan, after_i)
            if taken is NotImplemented:
                return NotImplemented
            i += taken
        return 1

    def _plan_checks(self):
        """What a plan depends on besides the batch size and thread count: (object,
        attribute, value) for every layer's plan_state (its settings, mode and arrays,
        which must stay the same objects) and for the arenas' frozen flags."""
        checks = []
        for _, module in self.modules():
            checks += [(module, name, getattr(module, name)) for name in module.plan_state()]
        checks += [(arena, "version", arena.version) for arena in self.arenas()]
        return checks

    def _plan_for(self, x):
        """The compiled plan for input x, or None when the layer-by-layer path must run
        (a layer without a compiled form, an input it does not take as is, an empty
        batch)."""
        if (not self.compiled or not self.layers or type(x) is not np.ndarray
                or x.ndim < 2 or not x.flags.c_contiguous or x.size == 0):
            return None
        key = (x.shape, x.dtype)
        entry = self._plans.get(key)
        if entry is not None and _network.unchanged(entry[0]):
            return entry[1]
        dtypes = {p.dtype for p in self.parameters()}
        if dtypes and dtypes != {x.dtype}:
            return None
        if x.dtype not in (np.float32, np.float64):
            return None
        checks = self._plan_checks()
        capacity = sum(1 for _ in self.modules())
        plan = _network.Plan(x.shape[0], x.size // x.shape[0], x.dtype, capacity,
                             x.shape[1:])
        try:
            if self.add_to_plan(plan, None) is NotImplemented:
                plan = None
        except ValueError:  # shapes the layers reject: their own errors say why
            plan = None
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[key] = (checks, plan)  # None too: not tried again while unchanged
        return plan
