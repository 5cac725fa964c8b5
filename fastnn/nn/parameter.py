"""Parameters, and the arena that holds a model's parameters in one buffer."""

import copy

import numpy as np

__all__ = ["KINDS", "Arena", "Parameter"]

# A parameter's kind decides whether penalties and weight decay apply to it by default:
# "weight" (yes), "bias" and "norm" (BatchNorm's gamma and beta) (no).
KINDS = ("weight", "bias", "norm")


class Parameter(np.ndarray):
    """An ndarray (usually a view into an arena) that carries its gradient.

    `.grad` is an array of the same shape (a view into the gradient arena); `.kind` is
    one of KINDS. Arithmetic on a Parameter gives plain ndarrays.
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
    """

    def __init__(self, named_arrays, dtype):
        """named_arrays: [(name, initial values, kind)]; values are copied in."""
        dtype = np.dtype(dtype)
        order = sorted(range(len(named_arrays)), key=lambda i: named_arrays[i][2] != "weight")
        total = sum(int(np.prod(np.shape(named_arrays[i][1]))) for i in order)
        self.data = np.empty(total, dtype)
        self.grad = np.zeros(total, dtype)
        self.segments = []
        self.params = {}
        offset = 0
        for i in order:
            name, values, kind = named_arrays[i]
            values = np.asarray(values)
            size = values.size
            data = self.data[offset:offset + size].reshape(values.shape)
            data[...] = values
            grad = self.grad[offset:offset + size].reshape(values.shape)
            self.params[name] = Parameter(data, grad, kind, self, offset)
            self.segments.append((name, offset, size, values.shape, kind))
            offset += size
        self.n_weights = sum(size for _, _, size, _, kind in self.segments if kind == "weight")

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["params"]  # views of data and grad: made again on unpickling
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.params = {}
        for name, offset, size, shape, kind in self.segments:
            self.params[name] = Parameter(
                self.data[offset:offset + size].reshape(shape),
                self.grad[offset:offset + size].reshape(shape), kind, self, offset)

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
