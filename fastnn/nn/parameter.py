"""Parameters, and the arena that holds a model's parameters in one buffer."""

import copy

import numpy as np

from .. import _memory

__all__ = ["KINDS", "Arena", "Parameter"]

# A parameter's kind decides whether penalties and weight decay apply to it by default:
# "weight" (yes), "bias" and "norm" (BatchNorm's gamma and beta) (no).
KINDS = ("weight", "bias", "norm")


class Parameter(np.ndarray):
    """An ndarray (usually a view into an arena) that carries its gradient.

    `.grad` is an array of the same shape (a view into the gradient arena); `.kind` is
    one of KINDS. `requires_grad = False` freezes it: layers accumulate no gradient into
    it, and optimizers and penalties leave it as it is. Arithmetic on a Parameter gives
    plain ndarrays.
    """

    def __new__(cls, data, grad, kind="weight", arena=None, offset=0):
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        obj = np.asarray(data).view(cls)
        obj.grad = grad
        obj.kind = kind
        obj.arena = arena  # the Arena this is a view into, at `offset` (or None)
        obj.offset = offset
        return obj

    def __array_finalize__(self, obj):
        # Views and results derived from a parameter are not parameters themselves.
        self.grad = None
        self.kind = getattr(obj, "kind", "weight")
        self.arena = None
        self.offset = 0
        self._requires_grad = True

    @property
    def requires_grad(self):
        """Whether training changes this parameter (True unless frozen)."""
        if self.arena is not None:
            return self.offset not in self.arena.frozen
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"requires_grad: expected a bool, got {flag!r}")
        if self.arena is not None:
            self.arena.set_frozen(self.offset, not flag)
        else:
            self._requires_grad = bool(flag)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        array = array.view(np.ndarray)
        return array[()] if return_scalar else array

    def __reduce__(self):
        # A parameter of an arena is copied (and pickled) as its arena's view, so that a
        # copied model's parameters are views into the copied arena; a loose one as a
        # plain array.
        if self.arena is not None:
            return (_arena_parameter, (self.arena, self.offset))
        return (np.asarray, (np.array(self),))

    def __deepcopy__(self, memo):
        if self.arena is not None:
            return _arena_parameter(copy.deepcopy(self.arena, memo), self.offset)
        return np.array(self)


def _rebuilt_arena(table):
    arena = Arena.__new__(Arena)
    arena.__dict__.update(table)
    arena.holder = None
    arena._make_params()
    return arena


def _arena_parameter(arena, offset):
    for param in arena.params.values():
        if param.offset == offset:
            return param
    raise ValueError(f"no parameter at offset {offset} of the arena")


class Arena:
    """One contiguous buffer for many parameters, and one for their gradients.

    Parameters are laid out weights first, so the entries that penalties and weight
    decay touch are one slice: data[:n_weights]. `segments` lists
    (name, offset, size, shape, kind) for every parameter.

    `holder` is the container (Sequential, Residual) whose arena this is, or None for a
    layer's own arena (a layer not yet in a container). `frozen` holds the offsets of
    the parameters with requires_grad False; `version` counts its changes (a compiled
    plan built for other flags is rebuilt). `retired` is set when the parameters moved
    into another arena: an optimizer still holding this one refuses to step.
    """

    def __init__(self, named_arrays, dtype, holder=None):
        """named_arrays: [(name, initial values, kind)]; values are copied in."""
        self.holder = holder
        self.frozen = set()
        self.version = 0
        self.retired = False
        dtype = np.dtype(dtype)
        order = sorted(range(len(named_arrays)), key=lambda i: named_arrays[i][2] != "weight")
        total = sum(int(np.prod(np.shape(named_arrays[i][1]))) for i in order)
        # from 2 MiB on, on huge pages whole (_memory): the products read the weights
        self.data = _memory.empty(total, dtype)
        self.grad = _memory.zeros(total, dtype)
        self.segments = []
        offset = 0
        for i in order:
            name, values, kind = named_arrays[i]
            values = np.asarray(values)
            size = values.size
            self.data[offset:offset + size].reshape(values.shape)[...] = values
            self.segments.append((name, offset, size, values.shape, kind))
            offset += size
        self._make_params()
        self.n_weights = sum(size for _, _, size, _, kind in self.segments if kind == "weight")

    def __reduce__(self):
        # Copied and pickled as its arrays and table, with the holder as state: the
        # holder's parameters refer back to this arena, which then exists already.
        table = {k: v for k, v in self.__dict__.items() if k not in ("params", "holder")}
        return (_rebuilt_arena, (table,), {"holder": self.holder})

    def _make_params(self):
        self.params = {}
        for name, offset, size, shape, kind in self.segments:
            self.params[name] = Parameter(
                self.data[offset:offset + size].reshape(shape),
                self.grad[offset:offset + size].reshape(shape), kind, self, offset)

    def set_frozen(self, offset, frozen):
        before = offset in self.frozen
        if frozen != before:
            (self.frozen.add if frozen else self.frozen.discard)(offset)
            self.version += 1

    def trainable_ranges(self, start, end):
        """[(lo, hi)]: the parts of data[start:end] that are not frozen, merged where
        adjacent (one range when nothing there is frozen), relative to start."""
        if not self.frozen:
            return [(0, end - start)]
        ranges = []
        for _, offset, size, _, _ in sorted(self.segments, key=lambda s: s[1]):
            lo, hi = max(offset, start), min(offset + size, end)
            if lo >= hi or offset in self.frozen:
                continue
            if ranges and ranges[-1][1] == lo - start:
                ranges[-1] = (ranges[-1][0], hi - start)
            else:
                ranges.append((lo - start, hi - start))
        return ranges

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def weights(self):
        """(values, gradients) of the weight entries: two flat views."""
        return self.data[:self.n_weights], self.grad[:self.n_weights]

    def decay_mask(self):
        """Boolean mask over the arena: True for entries of kind "weight"."""
        mask = np.zeros(self.size, bool)
        mask[:self.n_weights] = True
        return mask
