"""Argument validation: the one home of fastnn's checks, for every module to import.

Each `check_*` function returns the value it accepts (converted: a float, an int, a
pair, an array made contiguous) or raises, with a message that starts with the
argument's name:

- `ArgumentTypeError` for a value of the wrong kind (a string for a number, a bool or
  a float for an int, a list for a pair); it is a TypeError and also a ValueError, as
  scikit-learn's InvalidParameterError, so that callers that caught either still do;
- `ValueError` for a value of the right kind but out of range, NaN or infinite;
- `TypeError` for an array that is not an ndarray, or of an unsupported dtype.

A hyperparameter's constraint is stated once, as an `Interval`:

    self.p = check_float(p, "p", UNIT)              # a number in [0, 1]
    self.sigma = check_float(sigma, "sigma", POSITIVE)
"""

import math
from numbers import Integral, Number, Real

import numpy as np

__all__ = [
    "FLOAT_DTYPES",
    "NON_NEGATIVE",
    "POSITIVE",
    "UNIT",
    "ArgumentTypeError",
    "Interval",
    "check_array",
    "check_choice",
    "check_contiguous",
    "check_eps",
    "check_finite",
    "check_float",
    "check_float_in",
    "check_instance",
    "check_int",
    "check_labels",
    "check_output",
    "check_pair",
    "check_range",
    "check_rows_finite",
    "check_same_dtype",
    "check_same_shape",
    "check_slope",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong kind. Both a TypeError and a ValueError: before these
    checks were shared, some of fastnn's constructors raised ValueError for such
    arguments and some ops TypeError."""


# Interval's `closed`: whether (lo, hi) belong to it
_ENDS = {"both": (True, True), "left": (True, False), "right": (False, True),
         "neither": (False, False)}


class Interval:
    """The real numbers from lo to hi (None: unbounded on that side); `closed` says
    which ends belong to it: "both", "left", "right" or "neither"."""

    __slots__ = ("closed", "hi", "lo")

    def __init__(self, lo=None, hi=None, closed="both"):
        if closed not in _ENDS:
            raise ValueError(f"closed: expected one of {tuple(_ENDS)}, got {closed!r}")
        self.lo, self.hi, self.closed = lo, hi, closed

    def __contains__(self, v):
        left, right = _ENDS[self.closed]
        if self.lo is not None and not (v >= self.lo if left else v > self.lo):
            return False
        return self.hi is None or (v <= self.hi if right else v < self.hi)

    def __str__(self):
        """The constraint in words, to follow "must be": "in [0, 1]", "> 0"."""
        left, right = _ENDS[self.closed]
        if self.lo is not None and self.hi is not None:
            return f"in {'[' if left else '('}{self.lo:g}, {self.hi:g}{']' if right else ')'}"
        if self.lo is not None:
            return f"{'>=' if left else '>'} {self.lo:g}"
        if self.hi is not None:
            return f"{'<=' if right else '<'} {self.hi:g}"
        return "a real number"

    def __repr__(self):
        return f"Interval({self.lo!r}, {self.hi!r}, closed={self.closed!r})"


UNIT = Interval(0, 1)  # probabilities and fractions
NON_NEGATIVE = Interval(0, None)
POSITIVE = Interval(0, None, closed="neither")


# ---------------------------------------------------------------- scalars


def check_float(v, name, within=None):
    """v as a float: a real number (a bool is not one), finite, in the Interval `within`
    when given."""
    if isinstance(v, bool) or not isinstance(v, Real):
        raise ArgumentTypeError(f"{name}: expected a real number, got {v!r}")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{name}: must be finite, got {v!r}")
    if within is not None and x not in within:
        raise ValueError(f"{name}: must be {within}, got {v!r}")
    return x


def check_float_in(v, name, dtype, within=None):
    """v (a finite float) unchanged when it keeps its constraint as a number of `dtype`,
    the dtype a kernel computes it in: finite there, and in the Interval `within` once
    rounded (1e39 is inf in float32, an eps of 1e-50 is 0 and a beta of 1 - 1e-9 is 1);
    ValueError naming v, the value it becomes and the dtype otherwise."""
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore", under="ignore"):
        x = float(dtype.type(v))
    if not math.isfinite(x):
        raise ValueError(f"{name}: {v!r} overflows {dtype.name}, the dtype of the parameters "
                         f"it applies to")
    if within is not None and x not in within:
        raise ValueError(f"{name}: {v!r} is {x!r} in {dtype.name}, the dtype of the parameters "
                         f"it applies to, and must be {within} there")
    return v


def check_int(v, name, within=None):
    """v as an int: an integral number (a bool or a float is not one), in the Interval
    `within` when given."""
    if isinstance(v, bool) or not isinstance(v, Integral):
        raise ArgumentTypeError(f"{name}: expected an int, got {v!r}")
    if within is not None and v not in within:
        raise ValueError(f"{name}: must be {within}, got {v!r}")
    return int(v)


def check_eps(eps):
    """eps as a float > 0: the term that keeps a denominator away from zero."""
    return check_float(eps, "eps", POSITIVE)


def check_slope(slope):
    """slope as a finite float: LeakyReLU's slope for negative inputs (any sign)."""
    return check_float(slope, "slope")


def check_choice(v, name, choices):
    """v if it is one of `choices`: ArgumentTypeError when v is of none of their types
    (a list for a name), ValueError when it is another value."""
    error = ValueError if isinstance(v, tuple({type(c) for c in choices})) else ArgumentTypeError
    if error is ArgumentTypeError or v not in choices:
        raise error(f"{name}: expected one of {tuple(choices)}, got {v!r}")
    return v


def check_instance(v, name, types, what):
    """v if it is an instance of `types`; `what` names them in the TypeError."""
    if not isinstance(v, types):
        raise TypeError(f"{name}: expected {what}, got {v!r}")
    return v


def check_pair(v, name, check=check_float, within=None, single=True):
    """(a, b) from a pair, or from one number used for both (when `single`); each item
    passes `check(item, name, within)` (check_float or check_int)."""
    if single and isinstance(v, Number):
        a = b = v
    else:
        try:
            a, b = v
        except (TypeError, ValueError):
            kinds = "a number or a pair" if single else "a pair"
            raise ArgumentTypeError(f"{name}: expected {kinds}, got {v!r}") from None
    return check(a, name, within), check(b, name, within)


def check_range(v, name, within=None, about=0.0):
    """(lo, hi) from a number d, meaning [about - d, about + d] (d >= 0), or from a
    (lo, hi) pair with lo <= hi; both ends finite and in the Interval `within` when
    given. (torchvision's convention for random ranges: degrees=10 is [-10, 10].)"""
    if isinstance(v, Real) and not isinstance(v, bool):
        d = check_float(v, name)
        if d < 0:
            raise ValueError(f"{name}: a single value is a half-width and must be >= 0, got {v!r}")
        lo, hi = about - d, about + d
    else:
        lo, hi = check_pair(v, name, single=False)
        if lo > hi:
            raise ValueError(f"{name}: min {lo} is larger than max {hi}")
    if within is not None and (lo not in within or hi not in within):
        raise ValueError(f"{name}: values must be {within}, got the range ({lo}, {hi})")
    return lo, hi


# ---------------------------------------------------------------- arrays


def _names(dtypes):
    return " or ".join(d.name for d in dtypes)


def check_array(x, name, dtypes=FLOAT_DTYPES):
    """x itself if it is a numpy.ndarray of one of `dtypes` with at least one dimension;
    nothing is copied (TypeError for another type or dtype, ValueError for 0-d)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of {_names(dtypes)}, got "
                        f"{type(x).__name__}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype {_names(dtypes)}, got {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name}: expected an array with at least one dimension, got 0-d")
    return x


# The largest copy check_contiguous makes of a non-contiguous array, in bytes: the
# public setting fastnn.ops.MAX_IMPLICIT_COPY_BYTES reads and writes it.
copy_limit = [256 * 2**20]


def check_contiguous(x, name):
    """x itself if C-contiguous, else one contiguous copy; a copy larger than
    fastnn.ops.MAX_IMPLICIT_COPY_BYTES is refused (ValueError)."""
    if x.flags.c_contiguous:
        return x
    if x.nbytes > copy_limit[0]:
        raise ValueError(
            f"{name}: not C-contiguous, and copying it would take {x.nbytes / 2**20:.0f} MiB "
            f"(over fastnn.ops.MAX_IMPLICIT_COPY_BYTES); pass np.ascontiguousarray({name})"
        )
    return np.ascontiguousarray(x)


def check_finite(x, name):
    """x if every element is finite (ValueError otherwise)."""
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: must be finite")
    return x


# Values per block of the row-wise checks: their temporaries stay this small whatever
# the number of rows (a broadcast view of 10**8 rows included).
_BLOCK_VALUES = 2**16


def _blocks(x):
    """(first row, view) over x in blocks of whole rows of about _BLOCK_VALUES values."""
    rows = max(1, _BLOCK_VALUES // max(1, math.prod(x.shape[1:])))
    for lo in range(0, len(x), rows):
        yield lo, x[lo:lo + rows]


def _first_row(lo, bad):
    """The index of the first row of a block (starting at row lo) with a True in bad."""
    return lo + int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])


def check_rows_finite(x, name, dtype=None):
    """x if every value is finite, and stays finite once converted to `dtype` when given
    (float64 1e39 is inf in float32); else ValueError naming the first bad row. Integer
    arrays pass (no integer overflows float32). The check goes a block of rows at a
    time: no temporary grows with the number of rows, and nothing is copied."""
    if x.dtype.kind != "f" or x.size == 0:
        return x
    limit = None
    if dtype is not None and np.finfo(x.dtype).max > np.finfo(dtype).max:
        limit = np.finfo(dtype).max
    for lo, block in _blocks(x):
        bad = ~np.isfinite(block) if limit is None else ~(np.abs(block) <= limit)
        if bad.any():
            i = _first_row(lo, bad)
            row = np.asarray(x[i]).reshape(-1)
            value = row[np.flatnonzero(~np.isfinite(row) if limit is None
                                       else ~(np.abs(row) <= limit))[0]]
            if not np.isfinite(value):
                raise ValueError(f"{name}: contains NaN or inf ({value} in row {i})")
            raise ValueError(f"{name}: row {i} holds {value:g}, beyond the range of "
                             f"{np.dtype(dtype).name} (the model's dtype), where it would be "
                             f"inf")
    return x


def check_labels(y, name, n_classes=None):
    """y (integer class labels) if every label is >= 0 and, when n_classes is given,
    < n_classes; else ValueError naming the first bad row. Checked a block at a time,
    as check_rows_finite."""
    for lo, block in _blocks(y):
        bad = block < 0 if n_classes is None else (block < 0) | (block >= n_classes)
        if bad.any():
            i = _first_row(lo, bad)
            allowed = ">= 0" if n_classes is None else f"in [0, {n_classes})"
            raise ValueError(f"{name}: row {i} has label {y[i]}; class labels must be "
                             f"{allowed}")
    return y


def check_same_dtype(named):
    """Arrays given as (name, array) pairs all have the first one's dtype (TypeError)."""
    (first, a), *rest = named
    for name, x in rest:
        if x.dtype != a.dtype:
            raise TypeError(f"{name}: dtype {x.dtype} differs from {first}'s {a.dtype}")


def check_same_shape(named):
    """Arrays given as (name, array) pairs all have the first one's shape (ValueError)."""
    (first, a), *rest = named
    for name, x in rest:
        if x.shape != a.shape:
            raise ValueError(f"{name}: shape {x.shape} differs from {first}'s {a.shape}")


def check_output(out, shape, dtype, inputs=(), inplace_ok=(), name="out"):
    """A result array: a new one when `out` is None, else `out` itself once it has
    exactly `shape` and `dtype` (TypeError for another type or dtype, ValueError for
    another shape), is C-contiguous and writeable.

    `inputs`, (name, array) pairs, must not share memory with `out`, except those named
    in `inplace_ok` when `out` is exactly that array's memory (same start and strides).
    """
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name}: array is read-only")
    for input_name, x in inputs:
        if not np.may_share_memory(out, x):
            continue
        same = (
            input_name in inplace_ok
            and out.__array_interface__["data"][0] == x.__array_interface__["data"][0]
            and out.strides == x.strides
        )
        if not same:
            raise ValueError(
                f"{name}: overlaps {input_name} (only an exact in-place alias is allowed)"
            )
    return out
