"""The Module base class: forward/backward pairs with parameters in an arena."""

import functools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any, NamedTuple

import numpy as np

from .._checks import POSITIVE, ArgumentTypeError, check_int, check_rows_finite
from .parameter import Arena

__all__ = ["BackwardBeforeForward", "IncompatibleKeys", "Module", "check_input",
           "has_own_compiled_form"]


class IncompatibleKeys(NamedTuple):
    """What Module.load_state_dict did not load: names of the model's that the state
    lacks, and names of the state's that the model lacks."""

    missing_keys: list[str]
    unexpected_keys: list[str]


# Bumped whenever a module gains parameters or sub-modules, or parameters move to
# another arena: what a module caches about its parameters is valid while it stays.
_LAYOUT = [0]


class _Group:
    """Modules that run together, and their lock: a module starts alone, and a container
    joins the groups of the modules it adds, so that a model, its layers and every other
    model that shares one of them hold one lock."""

    __slots__ = ("__weakref__", "lock", "members")

    def __init__(self, module):
        self.lock = threading.RLock()
        self.members = weakref.WeakSet([module])


def _join(a, b):
    """Put modules a and b, and their groups, in one group: the larger takes the other's
    members. Both locks are held meanwhile, so no module moves while it runs."""
    while True:
        ga, gb = a._group, b._group
        if ga is gb:
            return
        first, second = sorted((ga, gb), key=id)  # every thread locks two groups alike
        with first.lock, second.lock:
            if a._group is not ga or b._group is not gb:
                continue  # joined elsewhere meanwhile
            big, small = (ga, gb) if len(ga.members) >= len(gb.members) else (gb, ga)
            for module in list(small.members):
                module._group = big
                big.members.add(module)
            return


def _acquire(module):
    """The lock of module's group, acquired (it is another one when the group joined a
    larger one while this thread waited)."""
    while True:
        lock = module._group.lock
        lock.acquire()
        if module._group.lock is lock:
            return lock
        lock.release()


def _serialized(method, name):
    """forward or backward holding the lock of its module's group, so that no other
    thread runs a module of the group (their workspaces, compiled plans and caches)
    meanwhile. forward records its thread; a backward from another thread raises
    RuntimeError, as it would read that thread's cached forward."""
    is_forward = name == "forward"

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        lock = _acquire(self)
        try:
            here = threading.get_ident()
            if is_forward:
                self.__dict__["_forward_thread"] = here
            else:
                there = self.__dict__.get("_forward_thread", here)
                if there != here:
                    raise RuntimeError(
                        f"{type(self).__name__}.backward() in thread {here}, but its last "
                        f"forward() ran in thread {there}: a forward and its backward must "
                        f"run in one thread, with no forward of the model from another "
                        f"thread between them")
            return method(self, *args, **kwargs)
        finally:
            lock.release()

    run.serialized = True
    return run


def _defined_in(cls, name):
    """The class of cls's MRO whose body defines attribute `name`."""
    return next(c for c in cls.__mro__ if name in c.__dict__)


def check_input(layer, x, dtype):
    """x if it is an ndarray of `dtype` (the layer's parameters'); else a TypeError that
    names the layer and the conversion. Input is never cast (as in PyTorch): a float64
    or integer array for a float32 model is refused, not silently copied. A list or
    other non-array: ArgumentTypeError (a TypeError and a ValueError)."""
    if not isinstance(x, np.ndarray):
        raise ArgumentTypeError(f"{type(layer).__name__}: expected the input as a "
                                f"numpy.ndarray of {dtype}, got {type(x).__name__}; pass "
                                f"np.asarray(x, np.{dtype})")
    if x.dtype != dtype:
        raise TypeError(f"{type(layer).__name__}: expected input of dtype {dtype}, got "
                        f"{x.dtype} ({dtype} is the dtype of its parameters; convert the "
                        f"input with x.astype(np.{dtype}))")
    return x


def _unique(params):
    """params without repeats (a parameter shared by two layers is one object)."""
    return list({id(p): p for p in params}.values())


def has_own_compiled_form(layer):
    """Whether layer's compiled form is that of its own forward and backward: the most
    derived class that describes it (defines one of the names in `compiled_form`) must
    derive from those that define forward and backward. A subclass that changes what a
    layer computes without describing its compiled form anew runs layer by layer."""
    cls = type(layer)
    names = cls.compiled_form
    definer = next((c for c in cls.__mro__
                    if c is not Module and any(n in c.__dict__ for n in names)), None)
    return definer is None or all(issubclass(definer, _defined_in(cls, name))
                                  for name in ("forward", "backward"))


class _Held:
    """Holds a module's group lock inside a `with` block."""

    __slots__ = ("lock", "module")

    def __init__(self, module):
        self.module = module

    def __enter__(self):
        self.lock = _acquire(self.module)

    def __exit__(self, *exc):
        self.lock.release()


class BackwardBeforeForward(RuntimeError, AttributeError):
    """backward() ran before the forward() whose state it needs. An AttributeError too,
    so that hasattr(layer, "_cache") is False rather than an exception."""


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

    Threads: a module shares one lock with its descendants, its containers and every
    model that shares a layer with it (a container joins the lock groups of the modules
    it adds), and forward and backward (of every subclass) hold it. Calls on one model,
    or on models that share a layer, from several threads run one at a time; models
    without a shared layer run in parallel. A backward must run in the thread of the
    forward it follows (RuntimeError otherwise). `with module.locked():` holds the lock
    over several calls (to read a layer's output buffer before another thread's call
    reuses it; the Trainer holds it for a whole training step, predict or evaluate).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("forward", "backward"):
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "serialized", False):
                setattr(cls, name, _serialized(method, name))

    def __init__(self):
        self._group = _Group(self)
        self.training = True
        self._param_names = []
        self._buffers = OrderedDict()
        self._modules = OrderedDict()
        self._workspaces = {}

    # ------------------------------------------------------------ definition

    def add_parameters(self, dtype, **named):
        """Create this module's parameters in an arena of its own.

        named: name=(initial values, kind); each becomes attribute `name`, a Parameter.
        A container (Sequential) that takes this layer moves them into its own arena.
        """
        arena = Arena([(name, values, kind) for name, (values, kind) in named.items()],
                      dtype)
        for name in named:
            self._param_names.append(name)
            setattr(self, name, arena.params[name])
        _LAYOUT[0] += 1

    def add_buffer(self, name, array):
        """Register non-trained state (e.g. running statistics), saved in state_dict."""
        self._buffers[name] = None
        setattr(self, name, array)

    def add_module(self, name, module):
        if not isinstance(module, Module):
            raise TypeError(f"{name}: expected a fastnn.nn.Module, got {type(module).__name__}")
        self._modules[name] = module
        _join(self, module)
        _LAYOUT[0] += 1
        return module

    # ------------------------------------------------------------ computing

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, dout, input_grad=True):
        """Accumulate the parameter gradients for dout and return d(loss)/d(input), or
        None with input_grad=False (a layer may then skip computing it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def __call__(self, x):
        return self.forward(x)

    # What a layer's forward keeps for its backward. Missing, backward came first.
    _FORWARD_STATE = frozenset({"_x", "_y", "_cache"})

    def __getattr__(self, name):  # called only for attributes that do not exist
        if name in Module._FORWARD_STATE:
            raise BackwardBeforeForward(
                f"{type(self).__name__}.backward() called before forward()")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------ threads

    def locked(self):
        """A context manager holding the lock that forward and backward take (that of
        this module's group); reentrant in the thread that holds it."""
        return _Held(self)

    # ------------------------------------------------------------ compiled form

    # The methods that describe a layer's compiled form (see has_own_compiled_form).
    compiled_form = ("add_to_plan", "epilogue")

    # True for a layer whose forward and backward run collectives over a data-parallel
    # communicator (its `comm`, set by the Trainer when None): a rank without rows in a
    # batch calls its take_part_forward() and take_part_backward() instead.
    collective = False

    # What data parallelism does with this module's own buffers, by name. rank_seeds:
    # buffers that key its random numbers (Dropout's "seed"); ranks other than 0 replace
    # them with a seed derived from rank 0's. rank_statistics: statistics of the rows
    # a rank saw (BatchNorm's running mean and variance), averaged over the ranks every
    # epoch (a collective layer's are the global batch's already).
    rank_seeds = ()
    rank_statistics = ()

    def add_to_plan(self, plan, after):
        """Add this layer's compiled op(s) to `plan` (a fastnn._kernels.network.Plan,
        whose d_out is the width of this layer's input) and return how many layers of
        the chain they stand for: 1, or 2 when the op also computes `after` (the next
        layer, or None), e.g. an activation applied in a GEMM epilogue. Raise
        ValueError for an input the layer rejects. NotImplemented (the default): no
        compiled form, the chain runs layer by layer."""
        return NotImplemented

    def plan_state(self):
        """Names of the attributes a compiled plan of this layer depends on besides the
        input shape: the plan is rebuilt when one changes (arrays: when it is another
        object)."""
        return ("training",)

    def epilogue(self):
        """(activation code, slope) when this layer is an element-wise function that a
        GEMM epilogue (or BatchNorm1d's normalizing pass) can apply in its place: its
        gradient read from the output, or from the input, which the epilogue then keeps;
        None otherwise."""
        return None

    def workspace(self, key, shape, dtype):
        """A buffer kept between calls: reallocated only when shape or dtype change."""
        buf = self._workspaces.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = np.empty(shape, dtype)
            self._workspaces[key] = buf
        return buf

    # ------------------------------------------------------------ mode

    def train(self, mode=True):
        """Train mode (eval mode with mode=False) for this module and its descendants,
        once no other thread is running one of them (it holds their lock)."""
        with self.locked():
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

    def arenas(self):
        """The distinct arenas this module's parameters live in, in parameter order."""
        seen = {}
        for _, p in self.named_parameters():
            arena = p.arena
            if arena is not None and id(arena) not in seen:
                seen[id(arena)] = arena
        return list(seen.values())

    @property
    def arena(self):
        """The arena that holds exactly this module's parameters: a layer's own, or its
        container's when this module is the container. None when the parameters fill
        only part of one (a layer inside a model, a slice) or lie in several."""
        arenas = self.arenas()
        if len(arenas) != 1:
            return None
        arena = arenas[0]
        covered = sum(p.size for p in self.parameters())
        return arena if covered == arena.size else None

    def adopt_parameters(self):
        """Move into one new arena, held by this module, the parameters of its
        descendants that no other container holds: those in a layer's own arena and
        those in the arena of a container among its descendants (which is retired).
        Parameters held by a container outside this module stay where they are, and
        this module works on views of them. Returns the new arena, or None. Containers
        call it once, when they are built."""
        inside = {id(m) for _, m in self.modules()}
        slots = []
        for prefix, module in self.modules():
            for name in module._param_names:
                p = getattr(module, name)
                arena = getattr(p, "arena", None)
                if arena is None or arena.holder is None or id(arena.holder) in inside:
                    slots.append((prefix + name, module, name, p))
        if not slots:
            return None
        dtypes = {p.dtype for _, _, _, p in slots}
        if len(dtypes) > 1:
            raise TypeError(
                f"parameters of one model must share a dtype, got {sorted(map(str, dtypes))}"
            )
        arena = Arena([(q, p, p.kind) for q, _, _, p in slots], dtypes.pop(), holder=self)
        for qualname, module, name, p in slots:
            if p.arena is not None:
                p.arena.retired = True
            new = arena.params[qualname]
            new.requires_grad = p.requires_grad
            setattr(module, name, new)
        _LAYOUT[0] += 1
        return arena

    def requires_grad_(self, flag=True):
        """Freeze (False) or unfreeze (True) every parameter of this module and its
        descendants; returns the module."""
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def param_dtype(self):
        """The dtype of this module's parameters (float32 when it has none); kept while
        the parameters stay where they are (asked once per training step)."""
        cached = self.__dict__.get("_param_dtype")
        if cached is None or cached[0] != _LAYOUT[0]:
            first = next(self.parameters(), None)
            cached = self._param_dtype = (
                _LAYOUT[0], np.dtype(np.float32) if first is None else first.dtype)
        return cached[1]

    def named_grads(self):
        for name, p in self.named_parameters():
            yield name, p.grad

    def grads(self):
        for _, g in self.named_grads():
            yield g

    def _zero_grad_for_step(self):
        """Zero the gradients for a training step whose backward pass comes next
        (Trainer); a compiled Sequential has that pass write them instead."""
        self.zero_grad()

    def zero_grad(self):
        """Set every gradient of this module's parameters to zero: one fill per arena it
        fills whole, one per parameter elsewhere (other models' gradients in a shared
        arena stay as they are)."""
        cached = self.__dict__.get("_grad_fills")
        if cached is None or cached[0] != _LAYOUT[0]:
            cached = self._grad_fills = (_LAYOUT[0], self._fills())
        for grad in cached[1]:
            grad.fill(0)

    def _fills(self):
        """The gradient arrays zero_grad fills: whole arenas where it can."""
        params = list(self.parameters())
        covered = {}
        for p in params:
            if p.arena is not None:
                covered[id(p.arena)] = covered.get(id(p.arena), 0) + p.size
        fills = [a.grad for a in self.arenas() if covered[id(a)] == a.size]
        fills += [p.grad for p in params
                  if p.arena is None or covered[id(p.arena)] != p.arena.size]
        return fills

    def __getstate__(self):
        # caches of views into the arenas, and the lock group: a copy makes its own
        state = self.__dict__.copy()
        for name in ("_grad_fills", "_param_dtype", "_buffer_cache", "_group",
                     "_forward_thread"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._group = _Group(self)
        for module in self._modules.values():  # restored before their container
            if "_group" in module.__dict__:
                _join(self, module)

    def _buffer_slots(self):
        """(module, name) of every buffer of this module and its descendants; kept while
        the modules stay (asked once per training step)."""
        cached = self.__dict__.get("_buffer_cache")
        if cached is None or cached[0] != _LAYOUT[0]:
            cached = self._buffer_cache = (
                _LAYOUT[0], [(m, name) for _, m in self.modules() for name in m._buffers])
        return cached[1]

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

    def load_state_dict(self, state: Mapping[str, Any],
                        strict: bool = True) -> IncompatibleKeys:
        """Copy values in place from a state_dict; returns (missing_keys,
        unexpected_keys), as torch's load_state_dict does.

        strict=True: the names must match exactly (KeyError listing the missing and
        unexpected ones). strict=False: the names both sides have are loaded; the others
        are left alone and returned. A value of another shape always raises ValueError.
        Everything is checked before anything is copied: a failed load changes nothing.
        """
        targets = OrderedDict(self.named_parameters())
        targets.update(self.named_buffers())
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict: missing {missing or 'none'}, unexpected {unexpected or 'none'}"
                f" (strict=False loads the names both have)"
            )
        loaded = [(name, target) for name, target in targets.items() if name in state]
        for name, target in loaded:
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
            # NaN, inf, or values that overflow the target's dtype would reach the weights
            check_rows_finite(np.atleast_1d(value), f"load_state_dict: {name}", target.dtype)
        for prefix, module in self.modules():
            module.check_state(prefix, state)
        with self.locked():  # no other thread computes with half-copied values
            for name, target in loaded:
                np.copyto(target, state[name], casting="same_kind")
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------ summary

    def summary(self, input_shape: int | Sequence[int] | None = None) -> str:
        """A table of this module and its descendants, nested ones indented (as Keras's
        summary() and torchinfo): per row the module's name and type, its output shape
        when input_shape is given, its parameter count (a container's: all of those
        inside it) and whether they are trained ("yes"), frozen ("no") or both
        ("partly"); then the totals, trainable and frozen (a parameter shared by two
        layers counts once). Buffers (running statistics) are not parameters.

        input_shape: one sample's shape, without the batch dimension ((features,) or
        (C, H, W)). The output shapes, "(N, ...)", are those of one forward pass of a
        zero batch of one sample, of the parameters' dtype, layer by layer in eval mode;
        every module's mode is restored after (running statistics and Dropout's step
        are left alone). Like any forward, it replaces what a backward() would use.
        A layer that rejects the input raises its own error.
        """
        shapes = {} if input_shape is None else self._output_shapes(input_shape)
        rows = []

        def visit(module, label, depth):
            params = _unique(module.parameters())
            trained = sum(p.size for p in params if p.requires_grad)
            frozen = sum(p.size for p in params) - trained
            state = ("-" if not params else "yes" if not frozen else "no" if not trained
                     else "partly")
            shape = shapes.get(id(module))
            rows.append(["  " * depth + label,
                         "-" if shape is None else "(" + ", ".join(["N", *map(str, shape[1:])])
                         + ")",
                         f"{trained + frozen:,}", state])
            for name, child in module._modules.items():
                visit(child, f"{name} ({type(child).__name__})", depth + 1)

        visit(self, type(self).__name__, 0)
        header = ["Layer (type)", "Output shape", "Param #", "Trainable"]
        if input_shape is None:
            header.pop(1)
            for row in rows:
                row.pop(1)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        right = {len(header) - 2}  # the counts align right

        def line(cells):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "=" * len(line(["x" * w for w in widths]))
        params = _unique(self.parameters())
        trained = sum(p.size for p in params if p.requires_grad)
        total = sum(p.size for p in params)
        lines = [line(header), rule, *map(line, rows), rule]
        if input_shape is not None:
            sample = ", ".join(["N", *map(str, self._summary_input(input_shape))])
            lines.append(f"Input: ({sample}), {self.param_dtype()}")
        lines += [f"Total params: {total:,}", f"Trainable params: {trained:,}",
                  f"Frozen params: {total - trained:,}"]
        return "\n".join(lines)

    @staticmethod
    def _summary_input(input_shape):
        """input_shape as a tuple of positive ints (one int: (input_shape,))."""
        if isinstance(input_shape, Integral) and not isinstance(input_shape, bool):
            input_shape = (input_shape,)
        try:
            dims = tuple(input_shape)
        except TypeError:
            raise TypeError(f"input_shape: expected a tuple of positive ints (one sample's "
                            f"shape, without the batch dimension), got {input_shape!r}"
                            ) from None
        return tuple(check_int(d, "input_shape", POSITIVE) for d in dims)

    def _output_shapes(self, input_shape):
        """{id(module): output shape} of one eval-mode forward of a zero sample, each
        module's forward called one by one (compiled plans switched off meanwhile) and
        recorded at its first call."""
        x = np.zeros((1, *self._summary_input(input_shape)), self.param_dtype())
        shapes = {}
        modules = list({id(m): m for _, m in self.modules()}.values())
        modes = [(m, m.training) for m in modules]
        plans = [(m, m.compiled) for m in modules if "compiled" in m.__dict__]

        def recorded(module):
            forward = module.forward

            def hooked(x):
                y = forward(x)
                shapes.setdefault(id(module), np.shape(y))
                return y
            return hooked

        try:
            for m, _ in plans:
                m.compiled = False
            for m in modules:
                m.__dict__["forward"] = recorded(m)
            self.eval()
            self.forward(x)
        finally:
            for m in modules:
                m.__dict__.pop("forward", None)
            for m, compiled in plans:
                m.compiled = compiled
            for m, mode in modes:
                m.training = mode
        return shapes

    def check_state(self, prefix, state):
        """Raise ValueError, naming the key, when `state` (a state_dict in which this
        module's names start with `prefix`) holds values this module must never hold;
        load_state_dict calls it before copying anything. Any value passes here."""

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
