"""The Module base class: forward/backward pairs with parameters in an arena."""

from collections import OrderedDict

import numpy as np

from .parameter import Arena

__all__ = ["Module"]


class Module:
    """Base of every layer and model.

    A subclass implements `forward(x) -> y` (caching what its backward needs) and
    `backward(dout) -> dx`, which ACCUMULATES parameter gradients into `.grad` (call
    `zero_grad()` between steps). It declares its parameters in `__init__` with
    `self.add_parameters(dtype, weight=(array, "weight"), bias=(array, "bias"))`, its
    other state with `self.add_buffer(name, array)`, and its sub-modules with
    `self.add_module(name, module)`. Modules start in train mode.

    Outputs of forward and backward may be buffers that the layer reuses on its next
    call with the same batch shape; `Sequential` returns arrays the caller owns.
    """

    def __init__(self):
        self.training = True
        self._param_names = []
        self._buffers = OrderedDict()
        self._modules = OrderedDict()
        self._workspaces = {}
        self.arena = None

    # ------------------------------------------------------------ definition

    def add_parameters(self, dtype, **named):
        """Create this module's parameters in an arena of its own.

        named: name=(initial values, kind); each becomes attribute `name`, a Parameter.
        A container (Sequential) later moves them into its own arena.
        """
        self.arena = Arena([(name, values, kind) for name, (values, kind) in named.items()],
                           dtype)
        for name in named:
            self._param_names.append(name)
            setattr(self, name, self.arena.params[name])

    def add_buffer(self, name, array):
        """Register non-trained state (e.g. running statistics), saved in state_dict."""
        self._buffers[name] = None
        setattr(self, name, array)

    def add_module(self, name, module):
        if not isinstance(module, Module):
            raise TypeError(f"{name}: expected a fastnn.nn.Module, got {type(module).__name__}")
        self._modules[name] = module
        return module

    # ------------------------------------------------------------ computing

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def __call__(self, x):
        return self.forward(x)

    # What a layer's forward keeps for its backward. Missing, backward came first.
    _FORWARD_STATE = frozenset({"_x", "_y", "_cache"})

    def __getattr__(self, name):  # called only for attributes that do not exist
        if name in Module._FORWARD_STATE:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def workspace(self, key, shape, dtype):
        """A buffer kept between calls: reallocated only when shape or dtype change."""
        buf = self._workspaces.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = np.empty(shape, dtype)
            self._workspaces[key] = buf
        return buf

    # ------------------------------------------------------------ mode

    def train(self, mode=True):
        self.training = bool(mode)
        for module in self._modules.values():
            module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------ parameters

    def modules(self, prefix=""):
        """(qualified name, module) for this module and every descendant."""
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.modules(f"{prefix}{name}.")

    def named_parameters(self):
        for prefix, module in self.modules():
            for name in module._param_names:
                yield prefix + name, getattr(module, name)

    def adopt_parameters(self):
        """Move every parameter of this module and its descendants into one new arena
        owned by this module (values kept); returns the arena. Containers call it."""
        slots = [(prefix + name, module, name)
                 for prefix, module in self.modules() for name in module._param_names]
        if not slots:
            return None
        dtypes = {getattr(m, name).dtype for _, m, name in slots}
        if len(dtypes) > 1:
            raise TypeError(
                f"parameters of one model must share a dtype, got {sorted(map(str, dtypes))}"
            )
        arena = Arena([(q, getattr(m, name), getattr(m, name).kind) for q, m, name in slots],
                      dtypes.pop())
        for _, module in self.modules():
            module.arena = None
        for qualname, module, name in slots:
            setattr(module, name, arena.params[qualname])
        self.arena = arena
        return arena

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_grads(self):
        for name, p in self.named_parameters():
            yield name, p.grad

    def grads(self):
        for _, g in self.named_grads():
            yield g

    def zero_grad(self):
        """Set every gradient to zero (one fill of the arena when this module owns one)."""
        if self.arena is not None:
            self.arena.grad.fill(0)
            return
        for p in self.parameters():
            p.grad.fill(0)

    def named_buffers(self):
        for prefix, module in self.modules():
            for name in module._buffers:
                yield prefix + name, getattr(module, name)

    # ------------------------------------------------------------ state

    def state_dict(self):
        """Copies of every parameter and buffer, by qualified name."""
        state = OrderedDict((name, np.array(p)) for name, p in self.named_parameters())
        state.update((name, np.array(b)) for name, b in self.named_buffers())
        return state

    def load_state_dict(self, state):
        """Copy values in place from a state_dict; names and shapes must match exactly.

        Everything is checked before anything is copied: a failed load changes nothing.
        """
        targets = OrderedDict(self.named_parameters())
        targets.update(self.named_buffers())
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if missing or unexpected:
            raise KeyError(
                f"load_state_dict: missing {missing or 'none'}, unexpected {unexpected or 'none'}"
            )
        for name, target in targets.items():
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(
                    f"load_state_dict: {name} has shape {value.shape}, expected {target.shape}"
                )
            if value.dtype.kind not in "fiu" or not np.can_cast(value.dtype, target.dtype,
                                                                 casting="same_kind"):
                raise TypeError(
                    f"load_state_dict: {name} has dtype {value.dtype}, which does not fit "
                    f"its {target.dtype} target"
                )
        for name, target in targets.items():
            np.copyto(target, state[name], casting="same_kind")

    def config(self):
        """Constructor arguments that rebuild this module (fastnn.save stores them).
        A module without them cannot be saved."""
        raise NotImplementedError(f"{type(self).__name__} does not define config()")

    def extra_repr(self):
        return ""

    def __repr__(self):
        inner = "".join(
            f"\n  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()
        )
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + (inner + "\n)" if inner else ")")
