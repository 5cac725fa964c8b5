"""fastnn._checks: every validator accepts good input (and returns it converted) and
rejects bad input with its documented exception and a message naming the argument."""

import math

import numpy as np
import pytest

from fastnn import ops
from fastnn._checks import (
    FLOAT_DTYPES,
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    ArgumentTypeError,
    Interval,
    check_array,
    check_choice,
    check_contiguous,
    check_eps,
    check_finite,
    check_float,
    check_instance,
    check_int,
    check_output,
    check_pair,
    check_range,
    check_same_dtype,
    check_same_shape,
    check_slope,
)

NOT_NUMBERS = ["1.0", None, [1.0], (1.0,), 1j, np.array(1.0), object()]
NON_FINITE = [math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf")]


def test_argument_type_error_is_both_type_and_value_error():
    assert issubclass(ArgumentTypeError, TypeError)
    assert issubclass(ArgumentTypeError, ValueError)


# ---------------------------------------------------------------- Interval


@pytest.mark.parametrize(("interval", "inside", "outside", "words"), [
    (UNIT, [0, 0.5, 1], [-1e-9, 1.0000001], "in [0, 1]"),
    (NON_NEGATIVE, [0, 3, 1e300], [-1e-300, -2], ">= 0"),
    (POSITIVE, [1e-300, 2], [0, -1], "> 0"),
    (Interval(0, 1, closed="right"), [1, 0.5], [0, 1.5], "in (0, 1]"),
    (Interval(0, 1, closed="left"), [0, 0.5], [1, -0.5], "in [0, 1)"),
    (Interval(-1, 1, closed="neither"), [0], [-1, 1], "in (-1, 1)"),
    (Interval(None, 2), [-1e300, 2], [2.5], "<= 2"),
    (Interval(None, 2, closed="neither"), [1.9], [2], "< 2"),
    (Interval(), [-1e300, 0, 1e300], [], "a real number"),
])
def test_interval_membership_and_words(interval, inside, outside, words):
    assert all(v in interval for v in inside)
    assert not any(v in interval for v in outside)
    assert str(interval) == words
    assert "Interval(" in repr(interval)


def test_interval_rejects_an_unknown_closed():
    with pytest.raises(ValueError, match="closed"):
        Interval(0, 1, closed="open")


# ---------------------------------------------------------------- scalars


@pytest.mark.parametrize("v", [0, 1, -2.5, 1e300, np.float32(0.25), np.int64(3), np.uint8(7)])
def test_check_float_accepts_finite_reals(v):
    out = check_float(v, "x")
    assert type(out) is float and out == float(v)


@pytest.mark.parametrize("v", [True, False, *NOT_NUMBERS], ids=repr)
def test_check_float_rejects_non_numbers(v):
    with pytest.raises(ArgumentTypeError, match=r"^x: expected a real number"):
        check_float(v, "x")


@pytest.mark.parametrize("v", NON_FINITE, ids=repr)
def test_check_float_rejects_non_finite(v):
    with pytest.raises(ValueError, match=r"^x: must be finite"):
        check_float(v, "x", NON_NEGATIVE)


def test_check_float_range():
    assert check_float(1, "p", UNIT) == 1.0
    with pytest.raises(ValueError, match=r"^p: must be in \[0, 1\], got 1.5"):
        check_float(1.5, "p", UNIT)
    with pytest.raises(ValueError, match=r"^sigma: must be > 0, got 0"):
        check_float(0, "sigma", POSITIVE)


@pytest.mark.parametrize("v", [0, 5, -3, np.int32(4), np.uint64(2**63), 2**80])
def test_check_int_accepts_integers(v):
    out = check_int(v, "n")
    assert type(out) is int and out == v


@pytest.mark.parametrize("v", [True, False, 1.0, 2.5, np.float64(3), "3", None, [1]], ids=repr)
def test_check_int_rejects_bools_floats_and_others(v):
    with pytest.raises(ArgumentTypeError, match=r"^n: expected an int"):
        check_int(v, "n")


def test_check_int_range():
    assert check_int(0, "seed", NON_NEGATIVE) == 0
    with pytest.raises(ValueError, match=r"^seed: must be >= 0, got -1"):
        check_int(-1, "seed", NON_NEGATIVE)
    with pytest.raises(ValueError, match=r"^size: must be > 0"):
        check_int(0, "size", POSITIVE)


def test_check_eps():
    assert check_eps(1e-5) == 1e-5
    for bad in (0.0, -1e-8, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"^eps: "):
            check_eps(bad)
    with pytest.raises(ArgumentTypeError, match=r"^eps: "):
        check_eps("1e-5")


def test_check_slope():
    assert check_slope(-0.5) == -0.5
    assert check_slope(np.float32(0.25)) == 0.25
    with pytest.raises(ValueError, match=r"^slope: must be finite"):
        check_slope(math.nan)
    with pytest.raises(TypeError, match=r"^slope: expected a real number"):
        check_slope("abc")


def test_check_choice():
    assert check_choice("edge", "mode", ("constant", "edge")) == "edge"
    assert check_choice(None, "activation", ("relu", None)) is None
    assert check_choice("b", "key", {"a": 0, "b": 1}) == "b"
    with pytest.raises(ValueError, match=r"^mode: expected one of \('constant', 'edge'\)"):
        check_choice("wrap", "mode", ("constant", "edge"))
    for wrong_kind in (["edge"], 3, None, True):
        with pytest.raises(ArgumentTypeError, match=r"^mode: expected one of"):
            check_choice(wrong_kind, "mode", ("constant", "edge"))


def test_check_instance():
    assert check_instance(3, "n", int, "an int") == 3
    with pytest.raises(TypeError, match=r"^t: expected a transform, got 'x'"):
        check_instance("x", "t", (int, float), "a transform")


def test_check_pair():
    assert check_pair(2, "size", check_int, POSITIVE) == (2, 2)
    assert check_pair((2, 3), "size", check_int, POSITIVE) == (2, 3)
    assert check_pair(np.array([1.5, 0]), "shift", within=NON_NEGATIVE) == (1.5, 0.0)
    assert check_pair([0.1, 0.2], "translate", within=UNIT, single=False) == (0.1, 0.2)
    for bad in ((1, 2, 3), (1,), None, "abc"):
        with pytest.raises(ArgumentTypeError, match=r"^size: expected a number or a pair"):
            check_pair(bad, "size", check_int)
    with pytest.raises(ArgumentTypeError, match=r"^translate: expected a pair"):
        check_pair(0.1, "translate", single=False)
    with pytest.raises(ArgumentTypeError, match=r"^size: expected an int"):
        check_pair((2, True), "size", check_int)
    with pytest.raises(ArgumentTypeError, match=r"^size: expected an int"):
        check_pair(2.0, "size", check_int)
    with pytest.raises(ValueError, match=r"^size: must be > 0"):
        check_pair((2, 0), "size", check_int, POSITIVE)
    with pytest.raises(ValueError, match=r"^shift: must be finite"):
        check_pair((1, math.nan), "shift")


def test_check_range():
    assert check_range(10, "degrees") == (-10.0, 10.0)
    assert check_range(0.2, "range", POSITIVE, about=1.0) == (0.8, 1.2)
    assert check_range((-5, 30), "degrees") == (-5.0, 30.0)
    assert check_range((0.5, 1), "scale", Interval(0, 1, closed="right")) == (0.5, 1.0)
    with pytest.raises(ValueError, match="half-width"):
        check_range(-1, "degrees")
    with pytest.raises(ValueError, match="larger than max"):
        check_range((2, 1), "degrees")
    with pytest.raises(ValueError, match=r"^range: values must be > 0"):
        check_range(1, "range", POSITIVE, about=1.0)  # (0, 2): 0 is out
    with pytest.raises(ValueError, match=r"^shear: values must be in \[-89, 89\]"):
        check_range((0, 95), "shear", Interval(-89, 89))
    with pytest.raises(ValueError, match=r"^degrees: must be finite"):
        check_range(math.nan, "degrees")
    for bad in (True, (1,), (1, 2, 3), "ab", None):
        with pytest.raises(ArgumentTypeError, match=r"^degrees: "):
            check_range(bad, "degrees")


# ---------------------------------------------------------------- arrays


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_check_array_returns_the_array_itself(dtype):
    x = np.zeros((3, 2), dtype)[:, ::2]
    assert check_array(x, "x") is x  # nothing copied, even if not contiguous


def test_check_array_rejects_bad_input():
    with pytest.raises(TypeError, match=r"^x: expected a numpy.ndarray of float32 or float64"):
        check_array([1.0], "x")
    with pytest.raises(TypeError, match=r"^x: expected dtype float32 or float64, got int64"):
        check_array(np.zeros(3, np.int64), "x")
    with pytest.raises(ValueError, match=r"^x: .*0-d"):
        check_array(np.array(1.0), "x")
    pixels = (np.dtype(np.uint8), np.dtype(np.float32))
    assert check_array(np.zeros(2, np.uint8), "images", pixels).dtype == np.uint8
    with pytest.raises(TypeError, match=r"^images: expected dtype uint8 or float32"):
        check_array(np.zeros(2), "images", pixels)


def test_check_contiguous(monkeypatch):
    x = np.arange(12.0).reshape(3, 4)
    assert check_contiguous(x, "x") is x
    strided = x[:, ::2]
    copy = check_contiguous(strided, "x")
    assert copy.flags.c_contiguous and np.array_equal(copy, strided)
    monkeypatch.setattr(ops, "MAX_IMPLICIT_COPY_BYTES", strided.nbytes - 1)
    with pytest.raises(ValueError, match=r"^x: not C-contiguous.*ascontiguousarray"):
        check_contiguous(strided, "x")


def test_copy_limit_is_a_checked_setting_of_ops():
    before = ops.MAX_IMPLICIT_COPY_BYTES
    try:
        ops.MAX_IMPLICIT_COPY_BYTES = 8
        assert ops.MAX_IMPLICIT_COPY_BYTES == 8
        with pytest.raises(ValueError, match="not C-contiguous"):
            check_contiguous(np.zeros((4, 4))[:, ::2], "x")
        for bad in (-1, 1.5, True, "1"):
            with pytest.raises(ValueError, match=r"^MAX_IMPLICIT_COPY_BYTES"):
                ops.MAX_IMPLICIT_COPY_BYTES = bad
        assert ops.MAX_IMPLICIT_COPY_BYTES == 8
    finally:
        ops.MAX_IMPLICIT_COPY_BYTES = before


def test_check_finite():
    x = np.ones(3)
    assert check_finite(x, "m") is x
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match=r"^m: must be finite"):
            check_finite(np.array([0.0, bad]), "m")


def test_check_same_dtype_and_shape():
    a, b = np.zeros((2, 3)), np.zeros((2, 3))
    check_same_dtype([("a", a), ("b", b)])
    check_same_shape([("a", a), ("b", b)])
    with pytest.raises(TypeError, match=r"^b: dtype float32 differs from a's float64"):
        check_same_dtype([("a", a), ("b", b.astype(np.float32))])
    with pytest.raises(ValueError, match=r"^b: shape \(3, 2\) differs from a's \(2, 3\)"):
        check_same_shape([("a", a), ("b", b.T)])


def test_check_output_makes_or_checks_the_result():
    x = np.zeros((2, 3))
    new = check_output(None, (2, 3), x.dtype, [("x", x)])
    assert new.shape == (2, 3) and new.dtype == x.dtype and not np.shares_memory(new, x)
    out = np.empty((2, 3))
    assert check_output(out, (2, 3), x.dtype, [("x", x)]) is out
    assert check_output(x, (2, 3), x.dtype, [("x", x)], inplace_ok=("x",)) is x


def test_check_output_rejects_bad_out():
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match=r"^out: expected a numpy.ndarray"):
        check_output([[0.0] * 3] * 2, (2, 3), x.dtype)
    with pytest.raises(TypeError, match=r"^out: expected dtype float64, got float32"):
        check_output(np.empty((2, 3), np.float32), (2, 3), x.dtype)
    with pytest.raises(ValueError, match=r"^dx: expected shape \(2, 3\)"):
        check_output(np.empty((3, 2)), (2, 3), x.dtype, name="dx")
    with pytest.raises(ValueError, match=r"^out: must be C-contiguous"):
        check_output(np.empty((3, 2)).T, (2, 3), x.dtype)
    frozen = np.empty((2, 3))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out: array is read-only"):
        check_output(frozen, (2, 3), x.dtype)
    with pytest.raises(ValueError, match=r"^out: overlaps x"):
        check_output(x, (2, 3), x.dtype, [("x", x)])  # not allowed in place
    big = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"^out: overlaps x"):
        check_output(big[1:3], (2, 3), x.dtype, [("x", big[:2])], inplace_ok=("x",))
