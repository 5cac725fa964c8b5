"""Property-based tests (hypothesis) over the public entry points: every op in
fastnn.ops, the layers, losses, optimizers and augmentation transforms, on random
shapes (0 and 1 included), strided and transposed views, both float dtypes, NaN and
inf, and wrong arguments.

Each case must either match the NumPy oracle (tests/reference.py, or a formula written
here) or raise a Python exception (TypeError / ValueError) -- never crash, hang or read
out of bounds. The examples are derandomized and no database is kept, so a run is the
same everywhere."""

import math

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

CALLS = {
    "relu": lambda a: ops.relu(a[0], out=a[1]),
    "leaky_relu": lambda a: ops.leaky_relu(a[0], a[2], out=a[1]),
    "sigmoid_backward": lambda a: ops.sigmoid_backward(a[0], a[1], out=a[2]),
    "tanh_backward": lambda a: ops.tanh_backward(a[0], a[1]),
    "bias_activation": lambda a: ops.bias_activation(a[0], a[1], "relu", out=a[2]),
    "activation_bias_backward": lambda a: ops.activation_bias_backward(a[0], a[1], "tanh",
                                                                       out=a[2], dbias=a[3]),
    "column_sum": lambda a: ops.column_sum(a[0], out=a[1]),
    "row_sum": lambda a: ops.row_sum(a[0], out=a[1]),
    "matmul": lambda a: ops.matmul(a[0], a[1], out=a[2]),
    "batchnorm_forward": lambda a: ops.batchnorm_forward(a[0], a[1], a[2], a[3], a[4]),
    "batchnorm_backward": lambda a: ops.batchnorm_backward(a[0], a[1], a[2], a[3], a[4]),
    "dropout": lambda a: ops.dropout(a[0], 0.5, 1, 2, out=a[1]),
}


@settings(PROPS, max_examples=40)
@given(name=st.sampled_from(sorted(CALLS)), args=st.lists(GARBAGE, min_size=5, max_size=5))
def test_garbage_arguments_raise_cleanly(name, args):
    """Random mixtures of wrong types, dtypes, shapes, 0-d arrays and views: either a
    result or TypeError/ValueError."""
    try:
        CALLS[name](args)
    except (TypeError, ValueError):
        pass


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


@FEW
@given(args=st.lists(GARBAGE, min_size=3, max_size=3))
def test_layer_constructors_and_inputs_reject_garbage(args):
    for make in (lambda: nn.Linear(args[0], args[1]), lambda: nn.BatchNorm1d(args[0]),
                 lambda: nn.Dropout(args[0]), lambda: nn.LeakyReLU(args[0]),
                 lambda: nn.Linear(3, 2, dtype=args[2] if isinstance(args[2], str) else "f8")):
        try:
            make()
        except (TypeError, ValueError):
            pass
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.ReLU())
    try:
        model.forward(args[0])
    except (TypeError, ValueError):
        pass


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
