"""Bad input to every public op: wrong types, dtypes, shapes, out= arrays, activations,
slopes and oversized implicit copies, each rejected with an error naming the argument.
Good input is never modified."""

from collections import namedtuple

import numpy as np
import pytest

from fastnn import ops

Spec = namedtuple("Spec", "arrays out kwargs")

# For each op: its array arguments with valid shapes, the shape of its result (out=),
# and other keyword arguments.
SPECS = {
    "matmul": Spec({"a": (4, 3), "b": (3, 5)}, (4, 5), {}),
    "relu": Spec({"x": (4, 3)}, (4, 3), {}),
    "relu_backward": Spec({"dout": (4, 3), "x": (4, 3)}, (4, 3), {}),
    "leaky_relu": Spec({"x": (4, 3)}, (4, 3), {"slope": 0.1}),
    "leaky_relu_backward": Spec({"dout": (4, 3), "x": (4, 3)}, (4, 3), {"slope": 0.1}),
    "sigmoid": Spec({"x": (4, 3)}, (4, 3), {}),
    "sigmoid_backward": Spec({"dout": (4, 3), "y": (4, 3)}, (4, 3), {}),
    "tanh": Spec({"x": (4, 3)}, (4, 3), {}),
    "tanh_backward": Spec({"dout": (4, 3), "y": (4, 3)}, (4, 3), {}),
    "bias_activation": Spec({"x": (4, 3), "bias": (3,)}, (4, 3), {"activation": "relu"}),
    "activation_bias_backward": Spec({"dout": (4, 3), "y": (4, 3)}, (4, 3),
                                     {"activation": "relu"}),
    "column_sum": Spec({"x": (4, 3)}, (3,), {}),
    "row_sum": Spec({"x": (4, 3)}, (4,), {}),
}

ARRAY_ARGS = [(op, arg) for op, spec in SPECS.items() for arg in spec.arrays]
# (op, first array argument, another): where dtypes must agree.
ARG_PAIRS = [
    (op, *list(spec.arrays)[:1], other)
    for op, spec in SPECS.items() for other in list(spec.arrays)[1:]
]
ELEMENTWISE_FORWARD = ["relu", "leaky_relu", "sigmoid", "tanh"]


def ids(value):
    return "-".join(map(str, value)) if isinstance(value, tuple) else str(value)


def arrays(op, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-1, 1, shape).astype(dtype)
            for name, shape in SPECS[op].arrays.items()}


def call(op, **overrides):
    """ops.<op>(**valid arguments, **overrides)."""
    kwargs = {**arrays(op), **SPECS[op].kwargs, **overrides}
    return getattr(ops, op)(**kwargs)


def test_specs_name_public_ops():
    public = {name for name in ops.__all__ if callable(getattr(ops, name))}
    assert set(SPECS) <= public


# ---------------------------------------------------------------- types and dtypes


@pytest.mark.parametrize("op, arg", ARRAY_ARGS, ids=ids)
@pytest.mark.parametrize("bad", ["list", "scalar", "matrix-like"])
def test_non_array_is_a_type_error(op, arg, bad):
    valid = arrays(op)[arg]
    value = {"list": valid.tolist(), "scalar": 1.5, "matrix-like": memoryview(valid)}[bad]
    with pytest.raises(TypeError, match=rf"^{arg}: expected a numpy.ndarray"):
        call(op, **{arg: value})


@pytest.mark.parametrize("op, arg", ARRAY_ARGS, ids=ids)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.float16, np.complex128,
                                   np.longdouble, object], ids=lambda d: np.dtype(d).name)
def test_unsupported_dtype_is_a_type_error(op, arg, dtype):
    bad = arrays(op)[arg].astype(dtype)
    with pytest.raises(TypeError, match=rf"^{arg}: expected dtype float32 or float64"):
        call(op, **{arg: bad})


@pytest.mark.parametrize("op, first, other", ARG_PAIRS, ids=ids)
@pytest.mark.parametrize("single", ["first", "other"])
def test_mismatched_dtypes_are_a_type_error(op, first, other, single):
    args = arrays(op)
    name = first if single == "first" else other
    args[name] = args[name].astype(np.float32)
    with pytest.raises(TypeError, match=rf"^{other}: dtype .* differs from {first}'s"):
        getattr(ops, op)(**args, **SPECS[op].kwargs)


@pytest.mark.parametrize("op, arg", ARRAY_ARGS, ids=ids)
def test_zero_dimensional_is_a_value_error(op, arg):
    with pytest.raises(ValueError, match=rf"^{arg}: .*0-d"):
        call(op, **{arg: np.array(1.0)})


# ---------------------------------------------------------------- shapes


WRONG_SHAPES = [
    ("matmul", {"a": (4, 3), "b": (4, 5)}, {}, "inner dimensions"),
    ("matmul", {"a": (4, 3), "b": (3, 5)}, {"trans_a": True}, "inner dimensions"),
    ("matmul", {"a": (4, 3), "b": (3, 5)}, {"trans_b": True}, "inner dimensions"),
    ("matmul", {"a": (2, 4, 3), "b": (3, 3, 5)}, {}, "batch sizes"),
    ("matmul", {"a": (3,), "b": (3, 5)}, {}, r"^a: expected a 2-D or 3-D array, got 1-D"),
    ("matmul", {"a": (4, 3), "b": (3,)}, {}, r"^b: expected a 2-D or 3-D array, got 1-D"),
    ("matmul", {"a": (1, 2, 4, 3), "b": (3, 5)}, {}, r"^a: .*got 4-D"),
    ("matmul", {"a": (4, 3), "b": (1, 1, 3, 5)}, {}, r"^b: .*got 4-D"),
    ("relu_backward", {"dout": (4, 3), "x": (3, 4)}, {}, r"^x: shape"),
    ("relu_backward", {"dout": (12,), "x": (4, 3)}, {}, r"^x: shape"),
    ("leaky_relu_backward", {"dout": (4, 3), "x": (4, 3, 1)}, {}, r"^x: shape"),
    ("sigmoid_backward", {"dout": (4, 3), "y": (4, 4)}, {}, r"^y: shape"),
    ("tanh_backward", {"dout": (4, 3), "y": (1, 3)}, {}, r"^y: shape"),
    ("bias_activation", {"x": (4, 3), "bias": (4,)}, {}, r"^bias: expected shape \(3,\)"),
    ("bias_activation", {"x": (4, 3), "bias": (1, 3)}, {}, r"^bias: expected shape \(3,\)"),
    ("bias_activation", {"x": (3,), "bias": (3,)}, {}, r"^x: expected a 2-D"),
    ("bias_activation", {"x": (2, 4, 3), "bias": (3,)}, {}, r"^x: expected a 2-D"),
    ("activation_bias_backward", {"dout": (4, 3), "y": (4, 4)}, {}, r"^y: shape"),
    ("activation_bias_backward", {"dout": (12,), "y": (12,)}, {}, r"^dout: expected a 2-D"),
    ("activation_bias_backward", {"dout": (4, 3), "y": (4, 3, 1)}, {}, r"^y: expected a 2-D"),
    ("column_sum", {"x": (12,)}, {}, r"^x: expected a 2-D"),
    ("column_sum", {"x": (2, 2, 3)}, {}, r"^x: expected a 2-D"),
    ("row_sum", {"x": (12,)}, {}, r"^x: expected a 2-D"),
]


@pytest.mark.parametrize("op, shapes, kwargs, match", WRONG_SHAPES,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(WRONG_SHAPES)])
def test_wrong_shapes_are_a_value_error(op, shapes, kwargs, match):
    args = {name: np.zeros(shape) for name, shape in shapes.items()}
    with pytest.raises(ValueError, match=match):
        call(op, **args, **kwargs)


# ---------------------------------------------------------------- out=


def _non_contiguous(shape):
    return np.empty((*shape[:-1], 2 * shape[-1]))[..., ::2]


def _read_only(shape):
    out = np.empty(shape)
    out.flags.writeable = False
    return out


BAD_OUTS = {
    "list": (lambda shape: np.zeros(shape).tolist(), TypeError,
             r"^out: expected a numpy.ndarray"),
    "float32": (lambda shape: np.empty(shape, np.float32), TypeError,
                r"^out: expected dtype float64"),
    "int64": (lambda shape: np.empty(shape, np.int64), TypeError, r"^out: expected dtype"),
    "too-big": (lambda shape: np.empty((shape[0] + 1, *shape[1:])), ValueError,
                r"^out: expected shape"),
    "flat": (lambda shape: np.empty(int(np.prod(shape)) + 1), ValueError,
             r"^out: expected shape"),
    "extra-axis": (lambda shape: np.empty((1, *shape)), ValueError, r"^out: expected shape"),
    "strided": (_non_contiguous, ValueError, r"^out: must be C-contiguous"),
    "read-only": (_read_only, ValueError, r"^out: .*read-only"),
}


@pytest.mark.parametrize("bad", BAD_OUTS)
@pytest.mark.parametrize("op", SPECS)
def test_bad_out(op, bad):
    make, error, match = BAD_OUTS[bad]
    with pytest.raises(error, match=match):
        call(op, out=make(SPECS[op].out))


@pytest.mark.parametrize("op", [op for op, spec in SPECS.items() if len(spec.out) == 2])
def test_fortran_ordered_out_is_rejected(op):
    with pytest.raises(ValueError, match=r"^out: must be C-contiguous"):
        call(op, out=np.empty(SPECS[op].out[::-1]).T)


@pytest.mark.parametrize("op, arg", ARRAY_ARGS, ids=ids)
def test_out_partially_overlapping_an_input(op, arg):
    # The input and out are windows, one element apart, into one buffer.
    shape, out_shape = SPECS[op].arrays[arg], SPECS[op].out
    n, n_out = int(np.prod(shape)), int(np.prod(out_shape))
    buffer = np.random.default_rng(1).uniform(-1, 1, n + n_out)
    value = buffer[:n].reshape(shape)
    out = buffer[1:1 + n_out].reshape(out_shape)
    before = buffer.copy()
    with pytest.raises(ValueError, match=rf"^out: overlaps {arg}"):
        call(op, **{arg: value}, out=out)
    np.testing.assert_array_equal(buffer, before)


@pytest.mark.parametrize("op, arg", [
    ("matmul", "a"), ("relu", "x"), ("sigmoid_backward", "dout"), ("bias_activation", "x"),
    ("activation_bias_backward", "dout"), ("column_sum", "x"),
], ids=ids)
def test_out_overlapping_a_non_contiguous_input(op, arg):
    # The input is copied before the kernel runs, but out still overlaps the caller's
    # array: writing out would modify an input, which the rules forbid.
    shape, out_shape = SPECS[op].arrays[arg], SPECS[op].out
    n, n_out = int(np.prod(shape)), int(np.prod(out_shape))
    buffer = np.random.default_rng(2).uniform(-1, 1, max(2 * n, n_out))
    value = buffer[: 2 * n : 2].reshape(shape)
    out = buffer[:n_out].reshape(out_shape)
    assert not value.flags.c_contiguous and np.shares_memory(value, out)
    before = buffer.copy()
    with pytest.raises(ValueError, match=rf"^out: overlaps {arg}"):
        call(op, **{arg: value}, out=out)
    np.testing.assert_array_equal(buffer, before)


@pytest.mark.parametrize("op, arg", [
    ("relu_backward", "x"), ("leaky_relu_backward", "x"), ("sigmoid_backward", "y"),
    ("tanh_backward", "y"), ("bias_activation", "bias"), ("activation_bias_backward", "y"),
    ("column_sum", "x"), ("row_sum", "x"),
], ids=ids)
def test_out_aliasing_a_non_in_place_input(op, arg):
    # Only the element-wise input (x, or dout for a backward) may be out itself.
    shape = SPECS[op].out
    n = int(np.prod(shape))
    buffer = np.zeros(n + int(np.prod(SPECS[op].arrays[arg])))
    value = buffer[: buffer.size - n].reshape(SPECS[op].arrays[arg])
    out = buffer[:n].reshape(shape)
    with pytest.raises(ValueError, match=rf"^out: overlaps {arg}"):
        call(op, **{arg: value}, out=out)


@pytest.mark.parametrize("which", ["a", "b"])
def test_matmul_out_is_an_operand(which):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3, 3))
    with pytest.raises(ValueError, match=rf"^out: overlaps {which}"):
        ops.matmul(a, b, out=a if which == "a" else b)


def test_matmul_out_is_the_storage_of_a_transposed_operand():
    rng = np.random.default_rng(4)
    a, w = rng.standard_normal((2, 3, 3))
    with pytest.raises(ValueError, match=r"^out: overlaps b"):
        ops.matmul(a, w.T, out=w)


@pytest.mark.parametrize("op", [*ELEMENTWISE_FORWARD, "bias_activation"])
def test_in_place_view_of_the_input_is_allowed(op):
    args = arrays(op)
    x = args["x"]
    expected = call(op, **args)
    assert call(op, **args, out=x.view()).base is x
    np.testing.assert_array_equal(x, expected)


# ---------------------------------------------------------------- dbias=


BAD_DBIAS = {
    "list": (lambda: [0.0, 0.0, 0.0], TypeError),
    "float32": (lambda: np.empty(3, np.float32), TypeError),
    "wrong-length": (lambda: np.empty(4), ValueError),
    "2-D": (lambda: np.empty((1, 3)), ValueError),
    "strided": (lambda: np.empty(6)[::2], ValueError),
    "read-only": (lambda: _read_only((3,)), ValueError),
}


@pytest.mark.parametrize("bad", BAD_DBIAS)
def test_bad_dbias(bad):
    make, error = BAD_DBIAS[bad]
    out = np.full((4, 3), np.nan)
    with pytest.raises(error):
        call("activation_bias_backward", out=out, dbias=make())
    assert np.isnan(out).all(), "out was written before dbias was checked"


@pytest.mark.parametrize("other", ["dout", "y", "out"])
def test_dbias_overlapping_another_array(other):
    args = arrays("activation_bias_backward")
    args["out"] = np.empty((4, 3))
    target = args[other]
    with pytest.raises(ValueError, match=rf"overlaps {other}"):
        ops.activation_bias_backward(**args, dbias=target[1], activation="tanh")
    with pytest.raises(ValueError, match=rf"overlaps {other}"):
        ops.activation_bias_backward(**args, dbias=target.reshape(-1)[1:4], activation="tanh")


def test_dbias_errors_name_dbias():
    # The rules ask every error to name its argument: a bad dbias is not a bad out.
    for bad in ("float32", "wrong-length", "strided", "read-only"):
        make, error = BAD_DBIAS[bad]
        with pytest.raises(error, match=r"^dbias: "):
            call("activation_bias_backward", dbias=make())


# ---------------------------------------------------------------- activation and slope


@pytest.mark.parametrize("activation", ["softmax", "ReLU", "", "none", 3])
@pytest.mark.parametrize("op", ["bias_activation", "activation_bias_backward"])
def test_unknown_activation(op, activation):
    with pytest.raises(ValueError, match=r"^activation: expected one of"):
        call(op, activation=activation)


SLOPE_OPS = [
    ("leaky_relu", {}), ("leaky_relu_backward", {}),
    ("bias_activation", {"activation": "leaky_relu"}),
    ("activation_bias_backward", {"activation": "leaky_relu"}),
]


@pytest.mark.parametrize("slope", [np.nan, np.inf, -np.inf, np.float32("nan")], ids=str)
@pytest.mark.parametrize("op, kwargs", SLOPE_OPS, ids=[op for op, _ in SLOPE_OPS])
def test_non_finite_slope(op, kwargs, slope):
    with pytest.raises(ValueError, match=r"^slope: must be finite"):
        call(op, slope=slope, **kwargs)


@pytest.mark.parametrize("slope", ["abc", None, [0.1]], ids=repr)
@pytest.mark.parametrize("op, kwargs", SLOPE_OPS, ids=[op for op, _ in SLOPE_OPS])
def test_non_numeric_slope(op, kwargs, slope):
    with pytest.raises(TypeError, match=r"^slope: expected a real number"):
        call(op, slope=slope, **kwargs)


# ---------------------------------------------------------------- implicit copies


@pytest.mark.parametrize("op, arg", ARRAY_ARGS, ids=ids)
def test_oversized_implicit_copy_is_refused(op, arg, monkeypatch):
    monkeypatch.setattr(ops, "MAX_IMPLICIT_COPY_BYTES", 16)
    shape = SPECS[op].arrays[arg]
    strided = _non_contiguous(shape)
    strided[...] = 0.5
    assert strided.nbytes > 16 and not strided.flags.c_contiguous
    assert not strided.flags.f_contiguous  # not even matmul reads it in place
    with pytest.raises(ValueError, match=rf"^{arg}: not C-contiguous.*ascontiguousarray"):
        call(op, **{arg: strided})
    call(op, **{arg: np.ascontiguousarray(strided)})  # the same data, contiguous: fine


@pytest.mark.parametrize("op, arg", ARRAY_ARGS, ids=ids)
def test_implicit_copy_up_to_the_limit_is_made(op, arg, monkeypatch):
    shape = SPECS[op].arrays[arg]
    strided = _non_contiguous(shape)
    strided[...] = arrays(op)[arg]
    monkeypatch.setattr(ops, "MAX_IMPLICIT_COPY_BYTES", strided.nbytes)
    got = call(op, **{arg: strided})
    expected = call(op, **{arg: np.ascontiguousarray(strided)})
    for g, e in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, expected))):
        np.testing.assert_array_equal(g, e)


# ---------------------------------------------------------------- inputs are not modified


@pytest.mark.parametrize("with_out", [False, True])
@pytest.mark.parametrize("op", SPECS)
def test_inputs_are_not_modified(op, with_out):
    args = arrays(op, seed=5)
    before = {name: value.copy() for name, value in args.items()}
    extra = {"out": np.empty(SPECS[op].out)} if with_out else {}
    getattr(ops, op)(**args, **SPECS[op].kwargs, **extra)
    for name, value in args.items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
