"""Property-based tests (hypothesis) over the public entry points: every op in
fastnn.ops, the layers, losses, optimizers and augmentation transforms, on random
shapes (0 and 1 included), strided and transposed views, both float dtypes, NaN and
inf, and wrong arguments.

Each case must either match the NumPy oracle (tests/reference.py, or a formula written
here) or raise a Python exception (TypeError / ValueError) -- never crash, hang or read
out of bounds. The examples are derandomized and no database is kept, so a run is the
same everywhere."""

import inspect
import math
import traceback
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastnn import augment as A
from fastnn import losses, nn, ops, optim

PROPS = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])
FEW = settings(PROPS, max_examples=30)

FLOAT_DTYPES = st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0]
ACTS = [None, "relu", "leaky_relu", "sigmoid", "tanh"]
# LeakyReLU slopes the float32 kernels can hold: a float64 slope that rounds to 0 in
# float32 would turn slope * inf into NaN there, and not in the float64 oracle.
SLOPES = st.floats(0, 1, width=32)


def _elements(dtype, special=True, bound=1e3):
    finite = st.floats(-bound, bound, width=8 * np.dtype(dtype).itemsize)
    if not special:
        return finite
    return st.one_of(finite, finite, finite, st.sampled_from(SPECIALS))


@st.composite
def float_arrays(draw, dtype=None, shape=None, min_dims=1, max_dims=3, max_side=6,
                 special=True, layout=True, bound=1e3):
    """A float32/float64 array, C-contiguous, Fortran-ordered or a strided view."""
    dtype = draw(FLOAT_DTYPES) if dtype is None else np.dtype(dtype)
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0,
                                      max_side=max_side))
    shape = tuple(shape)
    kind = draw(st.sampled_from(["c", "f", "strided"])) if layout else "c"
    if kind == "strided" and len(shape):
        big = draw(hnp.arrays(dtype, (2 * shape[0], *shape[1:]),
                              elements=_elements(dtype, special, bound)))
        return big[::2]
    x = draw(hnp.arrays(dtype, shape, elements=_elements(dtype, special, bound)))
    return np.asfortranarray(x) if kind == "f" else x


def _same_kind(draw, x, special=True, bound=1e3):
    """Another array of x's shape and dtype."""
    return draw(float_arrays(dtype=x.dtype, shape=x.shape, special=special, bound=bound))


# ---------------------------------------------------------------- activations

FORWARD = {
    "relu": lambda x, s: ops.relu(x),
    "leaky_relu": lambda x, s: ops.leaky_relu(x, s),
    "sigmoid": lambda x, s: ops.sigmoid(x),
    "tanh": lambda x, s: ops.tanh(x),
}
BACKWARD = {
    "relu": lambda d, y, s: ops.relu_backward(d, y),
    "leaky_relu": lambda d, y, s: ops.leaky_relu_backward(d, y, s),
    "sigmoid": lambda d, y, s: ops.sigmoid_backward(d, y),
    "tanh": lambda d, y, s: ops.tanh_backward(d, y),
}


@PROPS
@given(name=st.sampled_from(sorted(FORWARD)), x=float_arrays(),
       slope=SLOPES, inplace=st.booleans())
def test_activation_forward(name, x, slope, inplace):
    expected = ref.FORWARD[name](x, slope)
    if inplace and x.flags.c_contiguous and x.flags.writeable:
        got = getattr(ops, name)(x, *((slope,) if name == "leaky_relu" else ()), out=x)
        assert got is x
    else:
        before = x.copy()
        got = FORWARD[name](x, slope)
        np.testing.assert_array_equal(x, before)  # input untouched
    ref.assert_close(got, expected, x.dtype)


@PROPS
@given(name=st.sampled_from(sorted(BACKWARD)), data=st.data(), slope=SLOPES)
def test_activation_backward(name, data, slope):
    dout = data.draw(float_arrays())
    y = _same_kind(data.draw, dout)
    got = BACKWARD[name](dout, y, slope)
    ref.assert_close(got, ref.BACKWARD[name](dout, y, slope), dout.dtype)


# ---------------------------------------------------------------- fused epilogues, sums


@PROPS
@given(act=st.sampled_from(ACTS), data=st.data(), slope=SLOPES)
def test_bias_activation(act, data, slope):
    x = data.draw(float_arrays(min_dims=2, max_dims=2))
    bias = data.draw(float_arrays(dtype=x.dtype, shape=(x.shape[1],)))
    got = ops.bias_activation(x, bias, act, slope)
    ref.assert_close(got, ref.bias_activation(x, bias, act, slope), x.dtype)


@PROPS
@given(act=st.sampled_from(ACTS), data=st.data(), slope=SLOPES)
def test_activation_bias_backward(act, data, slope):
    dout = data.draw(float_arrays(min_dims=2, max_dims=2))
    y = _same_kind(data.draw, dout)
    dx, db = ops.activation_bias_backward(dout, y, act, slope)
    want_dx, want_db = ref.activation_bias_backward(dout, y, act, slope)
    ref.assert_close(dx, want_dx, dout.dtype)
    with np.errstate(all="ignore"):
        magnitude = np.abs(want_dx).sum(axis=0)
    ref.assert_close(db, want_db, dout.dtype, magnitude=magnitude)


@PROPS
@given(x=float_arrays(min_dims=2, max_dims=2, max_side=40), axis=st.sampled_from([0, 1]))
def test_sums(x, axis):
    got = ops.column_sum(x) if axis == 0 else ops.row_sum(x)
    expected = ref.column_sum(x) if axis == 0 else ref.row_sum(x)
    with np.errstate(all="ignore"):
        magnitude = np.abs(x.astype(np.float64)).sum(axis=axis)
    ref.assert_close(got, expected, x.dtype, magnitude=magnitude)


@settings(PROPS, max_examples=30)
@given(seed=st.integers(0, 2**32), rows=st.integers(1, 3000), cols=st.integers(1, 70),
       dtype=FLOAT_DTYPES, act=st.sampled_from(ACTS), nans=st.integers(0, 3))
def test_large_shapes_cross_thread_chunks(seed, rows, cols, dtype, act, nans):
    """Shapes big enough to be split between threads, with NaN and inf at random places:
    the chunk edges must neither drop nor double-count an element."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(dtype)
    flat = x.reshape(-1)
    flat[rng.integers(0, x.size, nans)] = np.nan
    flat[rng.integers(0, x.size, nans)] = np.inf
    bias = rng.standard_normal(cols).astype(dtype)
    ref.assert_close(ops.bias_activation(x, bias, act), ref.bias_activation(x, bias, act),
                     dtype)
    dx, db = ops.activation_bias_backward(x, x, act)
    want_dx, want_db = ref.activation_bias_backward(x, x, act)
    ref.assert_close(dx, want_dx, dtype)
    with np.errstate(all="ignore"):
        ref.assert_close(db, want_db, dtype, magnitude=np.abs(want_dx).sum(axis=0))
        ref.assert_close(ops.row_sum(x), ref.row_sum(x), dtype,
                         magnitude=np.abs(x.astype(np.float64)).sum(axis=1))
    y = ops.dropout(x, 0.3, seed, rows)
    kept = y != 0
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x) & kept)


# ---------------------------------------------------------------- matmul


@st.composite
def matmul_case(draw):
    dtype = draw(FLOAT_DTYPES)
    m, k, n = (draw(st.integers(0, 7)) for _ in range(3))
    trans_a, trans_b = draw(st.booleans()), draw(st.booleans())
    batched = draw(st.sampled_from(["none", "both", "a", "b", "a1", "b1"]))
    batch = draw(st.integers(1, 4))
    ba = {"none": 0, "both": batch, "a": batch, "b": 0, "a1": 1, "b1": batch}[batched]
    bb = {"none": 0, "both": batch, "a": 0, "b": batch, "a1": batch, "b1": 1}[batched]

    def operand(rows, cols, trans, nb):
        shape = (cols, rows) if trans else (rows, cols)
        if nb:
            shape = (nb, *shape)
        return draw(float_arrays(dtype=dtype, shape=shape, special=False))

    return operand(m, k, trans_a, ba), operand(k, n, trans_b, bb), trans_a, trans_b


@PROPS
@given(case=matmul_case())
def test_matmul(case):
    a, b, trans_a, trans_b = case
    got = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    expected = ref.matmul(a, b, trans_a, trans_b)
    magnitude = ref.matmul(np.abs(a), np.abs(b), trans_a, trans_b)
    ref.assert_close(got, expected, a.dtype, magnitude=magnitude)


@PROPS
@given(case=matmul_case(), data=st.data(), special=st.sampled_from([np.nan, np.inf]))
def test_matmul_propagates_nan_and_inf(case, data, special):
    """A NaN (or inf) in row i of op(a) makes row i of the product NaN (or non-finite):
    nothing skips it, whatever the thread split."""
    a, b, trans_a, trans_b = case
    a = np.array(a)  # a writeable copy, layout kept
    rows = a.shape[-1] if trans_a else a.shape[-2]
    k = a.shape[-2] if trans_a else a.shape[-1]
    if a.size == 0 or k == 0:
        return
    i = data.draw(st.integers(0, rows - 1))
    j = data.draw(st.integers(0, k - 1))
    index = (j, i) if trans_a else (i, j)
    a[(..., *index)] = special
    got = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    row = got[..., i, :]
    if special != special:  # NaN
        assert np.isnan(row).all()
    else:
        with np.errstate(all="ignore"):
            expected = ref.matmul(a, b, trans_a, trans_b)[..., i, :]
        assert np.array_equal(np.isfinite(row), np.isfinite(expected))


@PROPS
@given(data=st.data())
def test_matmul_accumulate(data):
    a = data.draw(float_arrays(min_dims=2, max_dims=2, special=False))
    b = data.draw(float_arrays(dtype=a.dtype, shape=(a.shape[1], data.draw(st.integers(0, 6))),
                               special=False))
    out = data.draw(float_arrays(dtype=a.dtype, shape=(a.shape[0], b.shape[1]),
                                 special=False, layout=False))
    start = out.astype(np.float64)
    ops.matmul(a, b, out=out, accumulate=True)
    magnitude = ref.matmul(np.abs(a), np.abs(b)) + np.abs(start)
    ref.assert_close(out, start + ref.matmul(a, b), a.dtype, magnitude=magnitude)


# ---------------------------------------------------------------- batch normalization


def ref_batchnorm(x, gamma, beta, eps):
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    var = x.var(axis=0)
    inv_std = 1 / np.sqrt(var + eps)
    return (x - mean) * inv_std * gamma + beta, mean, inv_std, x.var(axis=0, ddof=1)


@PROPS
@given(data=st.data(), eps=st.floats(1e-6, 1e-1), momentum=st.floats(0, 1))
def test_batchnorm_train(data, eps, momentum):
    n = data.draw(st.integers(2, 9))
    d = data.draw(st.integers(0, 6))
    x = data.draw(float_arrays(shape=(n, d), special=False, bound=10))
    gamma, beta = (data.draw(float_arrays(dtype=x.dtype, shape=(d,), special=False, bound=3))
                   for _ in range(2))
    rm, rv = np.zeros(d, x.dtype), np.ones(d, x.dtype)
    y, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=True,
                                             momentum=momentum, eps=eps)
    want_y, want_mean, want_inv, unbiased = ref_batchnorm(x, gamma, beta, eps)
    tol = 2e-4 if x.dtype == np.float32 else 1e-9
    np.testing.assert_allclose(y, want_y, rtol=tol, atol=tol * (1 + np.abs(want_y).max(initial=0)
                                                                * np.abs(want_inv).max(initial=0)))
    np.testing.assert_allclose(mean, want_mean, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(rm, momentum * want_mean, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(rv, (1 - momentum) + momentum * unbiased, rtol=tol, atol=tol * 10)

    dout = data.draw(float_arrays(dtype=x.dtype, shape=(n, d), special=False, bound=3))
    dx, dgamma, dbeta = ops.batchnorm_backward(dout, x, gamma, mean, inv_std)
    xhat = (x - want_mean) * want_inv
    g64 = dout.astype(np.float64)
    want_dgamma, want_dbeta = (g64 * xhat).sum(0), g64.sum(0)
    want_dx = gamma * want_inv / n * (n * g64 - want_dbeta - xhat * want_dgamma)
    scale = (np.abs(g64).sum(0) * np.abs(xhat).max(initial=1) + 1)
    np.testing.assert_allclose(dbeta, want_dbeta, rtol=tol, atol=tol * scale.max(initial=1))
    np.testing.assert_allclose(dgamma, want_dgamma, rtol=tol, atol=tol * scale.max(initial=1))
    atol = tol * (np.abs(gamma) * want_inv * scale).max(initial=1)
    np.testing.assert_allclose(dx, want_dx, rtol=tol, atol=atol)


@PROPS
@given(data=st.data())
def test_batchnorm_eval_matches_formula(data):
    x = data.draw(float_arrays(min_dims=2, max_dims=2))
    d = x.shape[1]
    gamma, beta, rm = (data.draw(float_arrays(dtype=x.dtype, shape=(d,), layout=False))
                       for _ in range(3))
    rv = np.abs(data.draw(float_arrays(dtype=x.dtype, shape=(d,), layout=False)))
    rm0, rv0 = rm.copy(), rv.copy()
    y, _, _ = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=False, eps=1e-3)
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)
    with np.errstate(all="ignore"):
        want = (x.astype(np.float64) - rm0) / np.sqrt(rv0.astype(np.float64) + 1e-3) * gamma + beta
    assert y.shape == x.shape and y.dtype == x.dtype
    finite = np.isfinite(want) & (np.abs(want) < 1e30)
    rtol = 1e-4 if x.dtype == np.float32 else 1e-10
    with np.errstate(all="ignore"):
        scale = ((np.abs(x.astype(np.float64)) + np.abs(rm0)) / np.sqrt(rv0 + 1e-3)
                 * np.abs(gamma) + np.abs(beta))
        err = np.abs(y - want)
    assert (err[finite] <= rtol * scale[finite] + rtol).all()
    assert np.isnan(y[np.isnan(want)]).all()


# ---------------------------------------------------------------- dropout


@PROPS
@given(x=float_arrays(special=False), p=st.floats(0, 1), seed=st.integers(0, 2**64 - 1),
       step=st.integers(0, 2**63))
def test_dropout(x, p, seed, step):
    y = ops.dropout(x, p, seed, step)
    assert y.shape == x.shape and y.dtype == x.dtype
    if p == 1:
        assert not y.any()
        return
    scaled = (x.astype(np.float64) / (1 - p)).astype(x.dtype)
    kept = y != 0
    # the kernel multiplies by 1 / (1 - p): a few ulps from x / (1 - p)
    np.testing.assert_allclose(y[kept], scaled[kept], rtol=4 * np.finfo(x.dtype).eps)
    np.testing.assert_array_equal(y, ops.dropout(x, p, seed, step))  # a function of its key
    if p == 0:
        np.testing.assert_array_equal(y, x)


# ---------------------------------------------------------------- wrong arguments

GARBAGE = st.one_of(
    st.none(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=3),
    st.lists(st.floats(-2, 2), max_size=4),
    hnp.arrays(st.sampled_from([np.int32, np.int64, np.uint8, np.bool_, np.complex64,
                                np.float16, np.object_]), hnp.array_shapes(max_dims=2,
                                                                           max_side=3)),
    hnp.arrays(FLOAT_DTYPES, st.just(())),  # 0-d
    float_arrays(max_dims=4, max_side=4),
)

# op -> (function, its arguments drawn here with the shape each must have, fixed
# arguments). Shapes: "S" any shape (the same for every "S" of the op), letters the
# dimensions n, d, k, m, "" a number.
CALLS = {
    "relu": (ops.relu, {"x": "S", "out": "S"}, {}),
    "leaky_relu": (ops.leaky_relu, {"x": "S", "out": "S", "slope": ""}, {}),
    "sigmoid_backward": (ops.sigmoid_backward, {"dout": "S", "y": "S", "out": "S"}, {}),
    "tanh_backward": (ops.tanh_backward, {"dout": "S", "y": "S"}, {}),
    "bias_activation": (ops.bias_activation, {"x": "nd", "bias": "d", "out": "nd"},
                        {"activation": "relu"}),
    "activation_bias_backward": (ops.activation_bias_backward,
                                 {"dout": "nd", "y": "nd", "out": "nd", "dbias": "d"},
                                 {"activation": "tanh"}),
    "column_sum": (ops.column_sum, {"x": "nd", "out": "d"}, {}),
    "row_sum": (ops.row_sum, {"x": "nd", "out": "n"}, {}),
    "matmul": (ops.matmul, {"a": "nk", "b": "km", "out": "nm"}, {}),
    "batchnorm_forward": (ops.batchnorm_forward,
                          {"x": "nd", "gamma": "d", "beta": "d", "running_mean": "d",
                           "running_var": "d"}, {}),
    "batchnorm_backward": (ops.batchnorm_backward,
                           {"dout": "nd", "x": "nd", "gamma": "d", "mean": "d",
                            "inv_std": "d"}, {}),
    "dropout": (ops.dropout, {"x": "S", "out": "S"}, {"p": 0.5, "seed": 1, "step": 2}),
}
OUTPUTS = ("out", "dbias")  # written, and returned
UPDATED = ("running_mean", "running_var")  # inputs updated in place
WRONG_DTYPES = [np.dtype(k) for k in (np.float32, np.float64, np.float16, np.int32, np.int64,
                                      np.uint8, np.bool_)]
FASTNN_DIR = Path(ops.__file__).resolve().parent


@st.composite
def garbage_case(draw, name):
    """The arguments of a valid call, some replaced by garbage, by an array of another
    dtype or by one with another first dimension."""
    _, shapes, _ = CALLS[name]
    dtype = draw(FLOAT_DTYPES)
    dims = {c: draw(st.integers(0, 4)) for c in "ndkm"}
    dims["S"] = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
    args = {}
    for arg, symbol in shapes.items():
        how = draw(st.sampled_from(["valid"] * 6 + ["garbage", "dtype", "shape"]))
        if how == "garbage" or (symbol == "" and how != "valid"):
            args[arg] = draw(GARBAGE)
            continue
        if symbol == "":
            args[arg] = draw(SLOPES)
            continue
        shape = dims["S"] if symbol == "S" else tuple(dims[c] for c in symbol)
        if how == "shape":
            shape = (shape[0] + 1, *shape[1:])
        kind = dtype
        if how == "dtype":
            kind = draw(st.sampled_from([k for k in WRONG_DTYPES if k != dtype]))
        if arg in OUTPUTS:
            args[arg] = None if how == "valid" and draw(st.booleans()) else np.zeros(shape, kind)
        elif kind in (np.float32, np.float64):
            args[arg] = draw(float_arrays(dtype=kind, shape=shape, layout=arg not in UPDATED))
        else:
            values = draw(float_arrays(dtype=np.float64, shape=shape, special=False, bound=100))
            args[arg] = values.astype(kind)
    return args


def _contract(name, args):
    """What fastnn.ops' contract (its module docstring) says of a call: True, it must
    return; False, it must refuse (TypeError/ValueError); None, this does not decide
    (a number given as something else, a batched matrix product)."""
    _, shapes, _ = CALLS[name]
    dims, dtypes, verdict = {}, set(), True
    for arg, symbol in shapes.items():
        v = args[arg]
        if symbol == "":  # a number: a float drawn as one, or garbage
            if not isinstance(v, float):
                verdict = None
            continue
        if v is None and arg in OUTPUTS + UPDATED:
            continue
        if not isinstance(v, np.ndarray) or v.dtype not in (np.float32, np.float64) or (
                v.ndim == 0):
            return False
        dtypes.add(v.dtype)
        if symbol == "S":
            if dims.setdefault("S", v.shape) != v.shape:
                return False
        elif v.ndim != len(symbol):
            if name == "matmul" and v.ndim == 3:
                verdict = None  # batched: not what this test draws
                continue
            return False
        elif any(dims.setdefault(c, n) != n for c, n in zip(symbol, v.shape)):
            return False
        if arg in OUTPUTS + UPDATED and not (v.flags.c_contiguous and v.flags.writeable):
            return False
    if len(dtypes) > 1:
        return False
    if name == "batchnorm_forward" and dims["n"] < 2:
        return False  # training needs two rows
    return verdict


def _raised_by_fastnn_checks(exc, names):
    """Whether exc is a clean refusal: raised by fastnn's Python code (not by compiled
    code, nor by NumPy on input the checks let through), with a message that starts
    with the name of an argument or of the op."""
    where = Path(traceback.extract_tb(exc.__traceback__)[-1].filename).resolve()
    return (where.suffix == ".py" and FASTNN_DIR in where.parents
            and str(exc).split(":")[0] in names)


def _results(value):
    return list(value) if isinstance(value, tuple) else [value]


@settings(PROPS, max_examples=1000)
@given(name=st.sampled_from(sorted(CALLS)), data=st.data())
def test_garbage_arguments_raise_cleanly(name, data):
    """Valid calls with arguments replaced by garbage (wrong types, dtypes, shapes, 0-d
    arrays), and strided or transposed views. A call the contract refuses raises a
    TypeError/ValueError from the checks, naming the argument; one it accepts returns
    what the op gives for C-contiguous copies of the same arrays (a matrix product:
    the NumPy reference), written into `out` when given, the inputs left as they were."""
    fn, _, fixed = CALLS[name]
    args = data.draw(garbage_case(name))
    valid = _contract(name, args)
    kwargs = {**args, **fixed}
    before = {k: np.array(v, order="C") for k, v in kwargs.items()
              if isinstance(v, np.ndarray)}
    try:
        got = fn(**kwargs)
    except (TypeError, ValueError) as exc:
        assert valid is not True, f"a valid call raised {type(exc).__name__}: {exc}"
        allowed = set(inspect.signature(fn).parameters) | {name}
        assert _raised_by_fastnn_checks(exc, allowed), f"{type(exc).__name__}: {exc}"
        return
    assert valid is not False, "a call the contract refuses returned"
    for k, v in before.items():
        if k not in OUTPUTS + UPDATED:
            np.testing.assert_array_equal(kwargs[k], v, err_msg=f"{k} was changed")
    for k, result in zip(OUTPUTS, _results(got)):
        if isinstance(kwargs.get(k), np.ndarray):
            assert result is kwargs[k], f"the result is not the {k}= array"
    if name == "matmul":
        a, b = kwargs["a"], kwargs["b"]
        if np.isfinite(a).all() and np.isfinite(b).all():
            ref.assert_close(got, ref.matmul(a, b), a.dtype,
                             magnitude=ref.matmul(np.abs(a), np.abs(b)))
        return
    clean = {k: None if k in OUTPUTS else before.get(k, v) for k, v in kwargs.items()}
    expected = fn(**clean)
    for i, (g, e) in enumerate(zip(_results(got), _results(expected), strict=True)):
        assert g.dtype == e.dtype, f"result {i}: dtype {g.dtype}, expected {e.dtype}"
        np.testing.assert_array_equal(g, e, err_msg=f"result {i}")
    for k in UPDATED:
        if isinstance(kwargs.get(k), np.ndarray):
            np.testing.assert_array_equal(kwargs[k], clean[k], err_msg=k)


@FEW
@given(data=st.data())
def test_out_validation(data):
    x = data.draw(float_arrays(min_dims=2, max_dims=2, layout=False))
    bad = data.draw(st.sampled_from(["readonly", "dtype", "shape", "overlap", "strided"]))
    out = np.empty_like(x)
    if bad == "readonly":
        out.flags.writeable = False
    elif bad == "dtype":
        out = out.astype(np.float32 if x.dtype == np.float64 else np.float64)
    elif bad == "shape":
        out = np.empty((x.shape[0] + 1, x.shape[1]), x.dtype)
    elif bad == "overlap":
        if x.size < 2:
            return
        big = np.concatenate([x.reshape(-1), x.reshape(-1)[:1]])
        x, out = big[1:].reshape(x.shape), big[:-1].reshape(x.shape)
    else:
        out = np.empty((x.shape[0], 2 * x.shape[1]), x.dtype)[:, ::2]
        if out.flags.c_contiguous:
            return
    with pytest.raises((TypeError, ValueError)):
        ops.relu(x, out=out)
    with pytest.raises((TypeError, ValueError)):
        ops.matmul(x, np.ones((x.shape[1], x.shape[1]), x.dtype), out=out)


# ---------------------------------------------------------------- layers


@st.composite
def linear_case(draw):
    dtype = draw(FLOAT_DTYPES)
    n, fin, fout = draw(st.integers(0, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    x = draw(float_arrays(dtype=dtype, shape=(n, fin), special=False, bound=5))
    dout = draw(float_arrays(dtype=dtype, shape=(n, fout), special=False, bound=5))
    return x, dout, fout, draw(st.booleans())


def _tol(dtype):
    return (2e-4, 1e-4) if np.dtype(dtype) == np.float32 else (1e-10, 1e-10)


@PROPS
@given(case=linear_case(), seed=st.integers(0, 100))
def test_linear_layer(case, seed):
    x, dout, fout, bias = case
    layer = nn.Linear(x.shape[1], fout, bias=bias, seed=seed, dtype=x.dtype)
    if bias:
        layer.bias[...] = np.linspace(-1, 1, fout)
    w = layer.weight.astype(np.float64)
    b = layer.bias.astype(np.float64) if bias else 0.0
    y = layer.forward(x)
    rtol, atol = _tol(x.dtype)
    x64, d64 = x.astype(np.float64), dout.astype(np.float64)
    np.testing.assert_allclose(y, x64 @ w + b, rtol=rtol, atol=atol * 10)
    layer.zero_grad()
    dx = layer.backward(dout)
    np.testing.assert_allclose(dx, d64 @ w.T, rtol=rtol, atol=atol * 10)
    np.testing.assert_allclose(layer.weight.grad, x64.T @ d64, rtol=rtol, atol=atol * 10)
    if bias:
        np.testing.assert_allclose(layer.bias.grad, d64.sum(0), rtol=rtol, atol=atol * 10)


@PROPS
@given(data=st.data(), kind=st.sampled_from(["ReLU", "LeakyReLU", "Sigmoid", "Tanh"]))
def test_activation_layers(data, kind):
    x = data.draw(float_arrays(min_dims=2, max_dims=2))
    layer = getattr(nn, kind)()
    y = layer.forward(x)
    name = {"ReLU": "relu", "LeakyReLU": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}[kind]
    ref.assert_close(np.asarray(y), ref.FORWARD[name](x, 0.01), x.dtype)
    dout = _same_kind(data.draw, x)
    dx = layer.backward(dout)
    # relu's backward reads the input, sigmoid's and tanh's the output
    arg = ref.FORWARD[name](x, 0.01) if name in ("sigmoid", "tanh") else x
    expected = ref.BACKWARD[name](dout, np.asarray(y) if name in ("sigmoid", "tanh") else arg,
                                  0.01)
    ref.assert_close(np.asarray(dx), expected, x.dtype)


@PROPS
@given(data=st.data(), training=st.booleans())
def test_batchnorm_layer(data, training):
    dtype = data.draw(FLOAT_DTYPES)
    n, d = data.draw(st.integers(0, 6)), data.draw(st.integers(1, 5))
    x = data.draw(float_arrays(dtype=dtype, shape=(n, d), special=False, bound=10))
    layer = nn.BatchNorm1d(d, dtype=dtype)
    layer.train(training)
    if training and n < 2:
        with pytest.raises(ValueError):
            layer.forward(x)
        return
    y = layer.forward(x)
    assert y.shape == x.shape and y.dtype == dtype
    if training:
        want = ref_batchnorm(x, 1.0, 0.0, layer.eps)[0]
    else:
        want = x / np.sqrt(1 + layer.eps)
    rtol, atol = _tol(dtype)
    np.testing.assert_allclose(y, want, rtol=rtol * 10, atol=atol * 100)
    dx = layer.backward(np.ones_like(x))
    assert dx.shape == x.shape and np.isfinite(dx).all()


@PROPS
@given(x=float_arrays(min_dims=2, max_dims=2, special=False), p=st.floats(0, 1),
       seed=st.integers(0, 2**32))
def test_dropout_layer(x, p, seed):
    layer = nn.Dropout(p, seed=seed)
    y = np.array(layer.forward(x))
    dx = np.array(layer.backward(np.ones_like(x)))
    # backward scales exactly where forward kept
    np.testing.assert_array_equal(dx != 0, (y != 0) | ((x == 0) & (dx != 0)))
    layer.eval()
    assert layer.forward(x) is x


@PROPS
@given(dtype=FLOAT_DTYPES, n=st.integers(1, 6), sizes=st.lists(st.integers(1, 5), min_size=2,
                                                                  max_size=4),
       act=st.sampled_from(["ReLU", "Tanh", "Sigmoid", "LeakyReLU"]), seed=st.integers(0, 9))
def test_sequential_matches_numpy(dtype, n, sizes, act, seed):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b, seed=seed + i, dtype=dtype))
        layers.append(getattr(nn, act)())
    model = nn.Sequential(*layers[:-1])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    dout = rng.standard_normal((n, sizes[-1])).astype(dtype)
    f = {"ReLU": lambda z: np.maximum(z, 0), "Tanh": np.tanh,
         "Sigmoid": lambda z: 1 / (1 + np.exp(-z)),
         "LeakyReLU": lambda z: np.where(z > 0, z, 0.01 * z)}[act]
    fprime = {"ReLU": lambda z, h: (z > 0) * 1.0, "Tanh": lambda z, h: 1 - h * h,
              "Sigmoid": lambda z, h: h * (1 - h),
              "LeakyReLU": lambda z, h: np.where(z > 0, 1.0, 0.01)}[act]
    weights = [(m.weight.astype(np.float64), m.bias.astype(np.float64))
               for m in model.layers if isinstance(m, nn.Linear)]
    h, cache = x.astype(np.float64), []
    for i, (w, b) in enumerate(weights):
        z = h @ w + b
        cache.append((h, z))
        h = f(z) if i < len(weights) - 1 else z
    y = model.forward(x)
    rtol, atol = _tol(dtype)
    np.testing.assert_allclose(y, h, rtol=rtol * 10, atol=atol * 10)
    model.zero_grad()
    dx = model.backward(dout)
    g = dout.astype(np.float64)
    grads = []
    for i in reversed(range(len(weights))):
        hin, z = cache[i]
        if i < len(weights) - 1:
            g = g * fprime(z, f(z))
        grads.append((hin.T @ g, g.sum(0)))
        g = g @ weights[i][0].T
    np.testing.assert_allclose(dx, g, rtol=rtol * 10, atol=atol * 10)
    linears = [m for m in model.layers if isinstance(m, nn.Linear)]
    for layer, (dw, db) in zip(linears, reversed(grads)):
        np.testing.assert_allclose(layer.weight.grad, dw, rtol=rtol * 10, atol=atol * 10)
        np.testing.assert_allclose(layer.bias.grad, db, rtol=rtol * 10, atol=atol * 10)


def _raised_in_fastnn(exc):
    """Whether exc was raised by fastnn's Python code (its checks), not by compiled code
    or by NumPy on input the checks let through."""
    where = Path(traceback.extract_tb(exc.__traceback__)[-1].filename).resolve()
    return where.suffix == ".py" and FASTNN_DIR in where.parents


def _real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_))


def _not_a_number(v):
    """Garbage that no numeric argument takes: None, text that is not a number, a list,
    an array of other than one element, a bool."""
    if v is None or isinstance(v, (list, bool, np.bool_)):
        return True
    if isinstance(v, np.ndarray):
        return v.size != 1
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return True
    return False


def _count_contract(v):
    """A layer size: True, it must be taken; False, refused; None, either (an integral
    float, a 0-d array, a number as text)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return v > 0
    if _not_a_number(v) or (isinstance(v, float) and not (math.isfinite(v) and v.is_integer())):
        return False
    return None


def _number_contract(v, lo=-math.inf, hi=math.inf):
    """A finite real number in [lo, hi], with _count_contract's verdicts."""
    if _real(v):
        return bool(math.isfinite(v) and lo <= v <= hi)
    return False if _not_a_number(v) else None


def _dtype_contract(v):
    try:
        return np.dtype(v) in (np.float32, np.float64)
    except TypeError:
        return False


# layer -> (build it from one garbage argument, the contract for it, what a built one
# must hold)
LAYER_CALLS = {
    "Linear in": (lambda v: nn.Linear(v, 2), _count_contract,
                  lambda m, v: m.in_features == v and m.weight.shape == (v, 2)),
    "Linear out": (lambda v: nn.Linear(3, v), _count_contract,
                   lambda m, v: m.out_features == v and m.weight.shape == (3, v)),
    "BatchNorm1d": (nn.BatchNorm1d, _count_contract,
                    lambda m, v: m.num_features == v and m.running_var.shape == (v,)),
    "Dropout": (nn.Dropout, lambda v: _number_contract(v, 0, 1),
                lambda m, v: m.p == float(v) and 0 <= m.p <= 1),
    "LeakyReLU": (nn.LeakyReLU, _number_contract,
                  lambda m, v: m.slope == float(v) and math.isfinite(m.slope)),
    "Linear dtype": (lambda v: nn.Linear(3, 2, dtype=v), _dtype_contract,
                     lambda m, v: m.weight.dtype == np.dtype(v)),
}
LAYER_ARGUMENTS = st.one_of(
    GARBAGE, st.integers(1, 6), st.integers(-2, 6), st.floats(0, 1), st.floats(-2, 2),
    st.sampled_from([0, -1, 1, 2, 0.0, 1.0, 2.0, 1.5, -0.5, math.nan, math.inf, True,
                     np.int64(3), np.float32(0.25)]),
    st.sampled_from(["f", "d", "f4", "f8", "float32", "i4", "e", "xx", "", "0.5"]))
ROWS_OF_3 = st.integers(0, 4).flatmap(lambda n: float_arrays(shape=(n, 3)))


@pytest.mark.parametrize("name", sorted(LAYER_CALLS))
@settings(PROPS, max_examples=50)
@given(value=LAYER_ARGUMENTS, x=st.one_of(GARBAGE, ROWS_OF_3, ROWS_OF_3))
def test_layer_constructors_and_inputs_reject_garbage(name, value, x):
    """A constructor given what its contract refuses raises TypeError/ValueError from
    fastnn's checks, and one given what it takes builds the layer it describes (either
    is fine where the contract does not decide). A model's forward takes a float32
    (N >= 2, 3) batch in any layout, and gives what it gives for a C-contiguous copy;
    it refuses anything but a float (N, 3) batch, or too few rows for BatchNorm."""
    make, contract, holds = LAYER_CALLS[name]
    valid = contract(value)
    try:
        layer = make(value)
    except (TypeError, ValueError) as exc:
        assert valid is not True, f"{name}({value!r}) raised {type(exc).__name__}: {exc}"
        assert _raised_in_fastnn(exc), f"{type(exc).__name__}: {exc}"
    else:
        assert valid is not False, f"{name}({value!r}) was built"
        assert holds(layer, value), f"{name}({value!r}) built {layer!r}"

    model = nn.Sequential(nn.Linear(3, 2, seed=0), nn.BatchNorm1d(2), nn.ReLU())
    batch = isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 3 and len(x) >= 2
    valid = batch and (True if x.dtype == np.float32 else None if x.dtype == np.float64
                       else False)
    try:
        y = model.forward(x)
    except (TypeError, ValueError) as exc:
        assert valid is not True, f"forward raised {type(exc).__name__}: {exc}"
        assert _raised_in_fastnn(exc), f"{type(exc).__name__}: {exc}"
        return
    assert valid is not False, f"forward took {type(x).__name__} {getattr(x, 'shape', '')}"
    assert y.shape == (len(x), 2) and y.dtype == np.float32
    np.testing.assert_array_equal(y, model.forward(np.ascontiguousarray(x)))


# ---------------------------------------------------------------- losses


def _softmax_ce(s, y):
    z = s - s.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(s)
    grad = np.exp(logp)
    grad[np.arange(n), y] -= 1
    return -logp[np.arange(n), y].mean(), grad / n


def _hinge(s, y, margin):
    n = len(s)
    m = s - s[np.arange(n), y][:, None] + margin
    m[np.arange(n), y] = 0
    value = np.maximum(m, 0).sum() / n
    grad = (m > 0).astype(np.float64)
    grad[np.arange(n), y] = -grad.sum(axis=1)
    return value, grad / n


def _mse(s, y):
    return ((s - y) ** 2).mean(), 2 * (s - y) / s.size


@np.errstate(over="ignore")
def _bce(s, y):
    value = (np.maximum(s, 0) - s * y + np.log1p(np.exp(-np.abs(s)))).mean()
    return value, (1 / (1 + np.exp(-s)) - y) / s.size


@PROPS
@given(data=st.data(), kind=st.sampled_from(["ce", "hinge", "mse", "bce"]),
       margin=st.one_of(st.just(0.0), st.floats(1e-3, 3)))  # (a denormal margin is 0 in float32)
def test_losses(data, kind, margin):
    dtype = data.draw(FLOAT_DTYPES)
    n, c = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 5))
    bound = 1e4 if kind in ("ce", "bce") else 10  # logits: overflow-safe for any size
    s = data.draw(float_arrays(dtype=dtype, shape=(n, c), special=False, bound=bound))
    s64 = s.astype(np.float64)
    if kind in ("ce", "hinge"):
        y = np.asarray(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
        loss = losses.SoftmaxCrossEntropy() if kind == "ce" else losses.MulticlassHinge(margin)
        value, grad = _softmax_ce(s64, y) if kind == "ce" else _hinge(s64, y, margin)
    else:
        y = data.draw(float_arrays(dtype=dtype, shape=(n, c), special=False,
                                   bound=1 if kind == "bce" else 10))
        if kind == "bce":
            y = np.abs(y)
        loss = losses.MSE() if kind == "mse" else losses.BCEWithLogits()
        value, grad = (_mse if kind == "mse" else _bce)(s64, y.astype(np.float64))
    got = loss.forward(s, y)
    dscores = loss.backward()
    assert dscores.shape == s.shape and dscores.dtype == dtype
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    scale = 1 + np.abs(s64).max() if kind in ("ce", "bce") else 1 + value
    assert math.isclose(got, value, rel_tol=rtol, abs_tol=rtol * scale)
    np.testing.assert_allclose(dscores, grad, rtol=rtol, atol=rtol / n)


@FEW
@given(data=st.data())
def test_losses_reject_bad_targets(data):
    s = data.draw(float_arrays(dtype=np.float32, min_dims=2, max_dims=2, special=False))
    bad_y = data.draw(GARBAGE)
    for loss in (losses.SoftmaxCrossEntropy(), losses.MulticlassHinge(), losses.MSE(),
                 losses.BCEWithLogits()):
        try:
            loss.forward(s, bad_y)
        except (TypeError, ValueError):
            continue
        assert loss.backward().shape == s.shape


@PROPS
@given(kind=st.sampled_from(["L2", "L1", "ElasticNet"]), lam=st.floats(0, 10),
       beta=st.floats(0, 5), dtype=FLOAT_DTYPES, fin=st.integers(1, 6), fout=st.integers(1, 6),
       seed=st.integers(0, 99))
def test_penalties(kind, lam, beta, dtype, fin, fout, seed):
    """lam * R(W) over the weights only (not biases, not BatchNorm), gradient added."""
    model = nn.Sequential(nn.Linear(fin, fout, seed=seed, dtype=dtype), nn.BatchNorm1d(
        fout, dtype=dtype), nn.ReLU(), nn.Linear(fout, 2, seed=seed + 1, dtype=dtype))
    rng = np.random.default_rng(seed)
    model.arena.data[:] = rng.uniform(-2, 2, model.arena.size)
    model.arena.data[::7] = 0  # sign(0) = 0 for L1
    model.zero_grad()
    c2, c1 = {"L2": (1.0, 0.0), "L1": (0.0, 1.0), "ElasticNet": (beta, 1.0)}[kind]
    penalty = losses.ElasticNet(lam, beta) if kind == "ElasticNet" else getattr(losses, kind)(
        lam)
    value = penalty.backward(model)
    want, rtol = 0.0, (1e-5 if dtype == np.float32 else 1e-12)
    for p in model.parameters():
        w = p.astype(np.float64)
        if p.kind == "weight":
            want += lam * (c2 * (w * w).sum() + c1 * np.abs(w).sum())
            grad = lam * (2 * c2 * w + c1 * np.sign(w))
        else:
            grad = np.zeros_like(w)
        np.testing.assert_allclose(p.grad, grad, rtol=rtol, atol=rtol * (1 + lam))
    assert math.isclose(value, want, rel_tol=rtol, abs_tol=rtol)


# ---------------------------------------------------------------- optimizers


def _ref_step(kind, p, g, hp, state):
    """One step (t = 1, fresh state) of each rule, in float64."""
    lr, wd = hp["lr"], hp.get("weight_decay", 0.0)
    if kind == "AdamW":
        p = p * (1 - lr * wd)
    elif wd:
        g = g + wd * p
    if kind == "SGD":
        if hp.get("momentum"):
            v = g.copy()
            return p - lr * ((g + hp["momentum"] * v) if hp.get("nesterov") else v)
        return p - lr * g
    if kind == "Adagrad":
        return p - lr * g / (np.sqrt(g * g) + hp.get("eps", 1e-10))
    if kind == "RMSProp":
        alpha = hp.get("alpha", 0.99)
        return p - lr * g / (np.sqrt((1 - alpha) * g * g) + hp.get("eps", 1e-8))
    b1, b2 = hp.get("betas", (0.9, 0.999))
    m, v = (1 - b1) * g, (1 - b2) * g * g
    return p - lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + hp.get("eps", 1e-8))


@st.composite
def optimizer_case(draw):
    kind = draw(st.sampled_from(["SGD", "Adagrad", "RMSProp", "Adam", "AdamW"]))
    hp = {"lr": draw(st.floats(1e-4, 1.0)), "weight_decay": draw(st.sampled_from([0.0, 0.1]))}
    if kind == "SGD":
        hp["momentum"] = draw(st.sampled_from([0.0, 0.9]))
        hp["nesterov"] = bool(hp["momentum"]) and draw(st.booleans())
    if kind == "RMSProp":
        hp["alpha"] = draw(st.floats(0, 0.999))
    if kind in ("Adam", "AdamW"):
        hp["betas"] = (draw(st.floats(0, 0.99)), draw(st.floats(0, 0.999)))
    return kind, hp


@PROPS
@given(case=optimizer_case(), dtype=FLOAT_DTYPES, fin=st.integers(1, 5), fout=st.integers(1, 5),
       seed=st.integers(0, 99))
def test_optimizer_one_step(case, dtype, fin, fout, seed):
    kind, hp = case
    model = nn.Sequential(nn.Linear(fin, fout, seed=seed, dtype=dtype), nn.ReLU(),
                          nn.Linear(fout, 2, seed=seed + 1, dtype=dtype))
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.grad[...] = rng.standard_normal(p.shape)
    before = [(p.astype(np.float64), p.grad.astype(np.float64), p.kind)
              for p in model.parameters()]
    getattr(optim, kind)(model, **hp).step()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for p, (p0, g0, pkind) in zip(model.parameters(), before):
        step_hp = dict(hp) if pkind == "weight" else {**hp, "weight_decay": 0.0}
        want = _ref_step(kind, p0, g0, step_hp, {})
        np.testing.assert_allclose(p, want, rtol=rtol, atol=rtol * (1 + hp["lr"] * 10))


@FEW
@given(kind=st.sampled_from(["SGD", "Adagrad", "RMSProp", "Adam", "AdamW"]),
       bad=st.sampled_from([("lr", -1.0), ("lr", math.nan), ("lr", "x"), ("eps", -1.0),
                            ("weight_decay", -0.5), ("weight_decay", math.inf),
                            ("momentum", -0.1), ("betas", (1.0, 0.5)), ("betas", 3),
                            ("alpha", 1.0)]))
def test_optimizer_bad_hyperparameters(kind, bad):
    model = nn.Linear(2, 2)
    name, value = bad
    import inspect

    accepted = inspect.signature(getattr(optim, kind)).parameters
    if name not in accepted:
        return
    with pytest.raises((TypeError, ValueError)):
        getattr(optim, kind)(model, **{"lr": 0.1, name: value})


@FEW
@given(values=st.lists(st.sampled_from([0.0, 1.0, -2.0, np.nan, np.inf]), min_size=1,
                       max_size=6), max_norm=st.floats(1e-3, 10))
def test_clip_grad_norm(values, max_norm):
    layer = nn.Linear(len(values), 1, dtype=np.float64)
    layer.weight.grad[:, 0] = values
    g = np.asarray(values, np.float64)
    if not np.isfinite(g).all():
        with pytest.raises(FloatingPointError):
            optim.clip_grad_norm(layer, max_norm)
        return
    norm = optim.clip_grad_norm(layer, max_norm)
    assert math.isclose(norm, float(np.sqrt((g * g).sum())), rel_tol=1e-12)
    coef = min(1.0, max_norm / (norm + 1e-6))
    np.testing.assert_allclose(layer.weight.grad[:, 0], g * coef, rtol=1e-12)


# ---------------------------------------------------------------- augmentation

MODES = st.sampled_from(["constant", "edge", "reflect"])


@st.composite
def transforms(draw):
    kind = draw(st.sampled_from(["flip", "crop", "translate", "rotate", "stretch", "shear",
                                 "affine", "resized", "lens", "elastic"]))
    mode, fill = draw(MODES), draw(st.floats(-300, 300))
    p = draw(st.floats(0, 1))
    if kind == "flip":
        return A.HorizontalFlip(p)
    if kind == "crop":
        return A.RandomCrop(draw(st.integers(1, 6)), padding=draw(st.integers(0, 3)), mode=mode,
                            fill=fill)
    if kind == "translate":
        return A.RandomTranslate(draw(st.floats(0, 10)), integer=draw(st.booleans()), p=p,
                                 mode=mode, fill=fill)
    if kind == "rotate":
        return A.RandomRotation(draw(st.floats(0, 360)), p=p, mode=mode, fill=fill)
    if kind == "stretch":
        lo = draw(st.floats(0.1, 2))
        return A.RandomStretch((lo, lo + draw(st.floats(0, 2))), p=p, mode=mode, fill=fill)
    if kind == "shear":
        return A.RandomShear(draw(st.floats(0, 89)), p=p, mode=mode, fill=fill)
    if kind == "affine":
        return A.RandomAffine(draw(st.floats(0, 180)), translate=(draw(st.floats(0, 1)),) * 2,
                              scale=(0.5, 1.5), shear=draw(st.floats(0, 45)), p=p, mode=mode,
                              fill=fill)
    if kind == "resized":
        return A.RandomResizedCrop(draw(st.integers(1, 6)), scale=(draw(st.floats(0.01, 1)), 1.0))
    if kind == "lens":
        return A.LensDistortion(draw(st.floats(0, 0.99)), p=p, mode=mode, fill=fill)
    return A.ElasticDistortion(draw(st.floats(0, 50)), draw(st.floats(0.1, 8)), p=p, mode=mode,
                               fill=fill)


@st.composite
def image_batches(draw):
    dtype = draw(st.sampled_from([np.dtype(np.uint8), np.dtype(np.float32)]))
    n, h, w = draw(st.integers(0, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    shape = (n, h, w) if draw(st.booleans()) else (n, draw(st.integers(1, 3)), h, w)
    if dtype == np.uint8:
        x = draw(hnp.arrays(dtype, shape))
    else:
        x = draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=32)))
    if draw(st.booleans()) and n:
        x = np.ascontiguousarray(np.repeat(x, 2, axis=0))[::2]  # a strided batch
    return x


@PROPS
@given(ts=st.lists(transforms(), min_size=1, max_size=3), x=image_batches(),
       seed=st.integers(0, 2**63))
def test_augment_invariants(ts, x, seed):
    before = x.copy()
    try:
        aug = A.Compose(ts, seed=seed)  # an earlier crop may fix a later one's input size
        y = aug(x)
    except ValueError as exc:  # a crop larger than the (padded) image
        assert "larger" in str(exc)
        return
    np.testing.assert_array_equal(x, before)  # input untouched
    assert y.dtype == x.dtype and y.ndim == x.ndim and len(y) == len(x)
    assert y.shape[1:-2] == x.shape[1:-2]
    assert y.flags.c_contiguous
    if x.dtype == np.float32:
        fills = [t.fill for t in ts if getattr(t, "fill", None) is not None]
        lo = min([0.0, *fills])
        hi = max([1.0, *fills])
        assert np.isfinite(y).all()
        assert (y >= lo - 1e-5).all() and (y <= hi + 1e-5).all()
    np.testing.assert_array_equal(y, aug(x, step=0))  # (seed, step) decides everything


@FEW
@given(make=st.sampled_from([
    lambda: A.HorizontalFlip(1.5), lambda: A.HorizontalFlip(math.nan),
    lambda: A.RandomCrop(0), lambda: A.RandomCrop(3, padding=-1),
    lambda: A.RandomCrop((2, 2, 2)), lambda: A.RandomTranslate(-1),
    lambda: A.RandomTranslate(math.inf), lambda: A.RandomRotation((10, -10)),
    lambda: A.RandomRotation(math.nan), lambda: A.RandomStretch((0, 1)),
    lambda: A.RandomStretch(-2), lambda: A.RandomShear(90), lambda: A.RandomShear((0, 1, 2)),
    lambda: A.RandomAffine(translate=(2, 0)), lambda: A.RandomAffine(scale=(-1, 1)),
    lambda: A.RandomResizedCrop(0), lambda: A.RandomResizedCrop(4, scale=(0, 1)),
    lambda: A.LensDistortion((-1, 0)), lambda: A.ElasticDistortion(-1, 1),
    lambda: A.ElasticDistortion(1, 0), lambda: A.ElasticDistortion(1, math.inf),
    lambda: A.RandomRotation(5, mode="wrap"), lambda: A.RandomRotation(5, fill=math.nan),
    lambda: A.Compose([A.HorizontalFlip()], seed=-1),
]))
def test_augment_bad_parameters(make):
    with pytest.raises(ValueError):
        make()


@PROPS
@given(x=image_batches(), data=st.data(), mode=MODES, fill=st.floats(0, 255))
def test_warp_with_any_matrix(x, data, mode, fill):
    """augment.warp with arbitrary finite matrices (huge shifts and scales, singular
    maps) and output sizes: every output pixel is an interpolation of source pixels or
    the fill value, never memory from outside the image."""
    n = len(x)
    entries = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, 1.0, -1.0, 1e9, -1e9]))
    mats = np.asarray(data.draw(st.lists(entries, min_size=6 * n, max_size=6 * n)),
                      np.float64).reshape(n, 2, 3)
    size = data.draw(st.none() | st.tuples(st.integers(1, 9), st.integers(1, 9)))
    y = A.warp(x, mats, size=size, mode=mode, fill=fill)
    h, w = x.shape[-2:] if size is None else size
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-2], h, w)
    if n:
        lo = min(float(x.min()), float(np.round(fill) if x.dtype == np.uint8 else fill))
        hi = max(float(x.max()), float(np.round(fill) if x.dtype == np.uint8 else fill))
        assert np.isfinite(y.astype(np.float64)).all()
        assert y.min() >= lo - 1e-3 and y.max() <= hi + 1e-3


@FEW
@given(bad=GARBAGE)
def test_augment_bad_images(bad):
    aug = A.Compose([A.RandomRotation(10), A.HorizontalFlip()], seed=0)
    try:
        y = aug(bad)
    except (TypeError, ValueError):
        return
    assert isinstance(y, np.ndarray) and y.shape == bad.shape
