"""Element-wise activations: relu, leaky_relu, sigmoid, tanh and their backward passes."""

import warnings

import numpy as np
import pytest
import reference as ref

from fastnn import ops

# (activation, slope); slope None: the op takes none.
ACTIVATIONS = [
    ("relu", None),
    ("leaky_relu", 0.01),
    ("leaky_relu", 0.0),
    ("leaky_relu", 0.3),
    ("leaky_relu", -0.5),
    ("sigmoid", None),
    ("tanh", None),
]
ACT_IDS = [name if slope is None else f"{name}-{slope}" for name, slope in ACTIVATIONS]
# One case per activation, for the (slower) checks on large arrays.
DISTINCT = [("relu", None), ("leaky_relu", 0.01), ("sigmoid", None), ("tanh", None)]

# (1000, 1031) crosses the kernels' parallel threshold of 32768 elements.
SHAPES = [
    (0,), (0, 5), (5, 0), (1,), (1, 1), (13,), (7, 13), (97, 131), (1000, 1031),
    (3, 5, 7), (2, 3, 4, 5),
]

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 2.5, -3.0, 1e4, -1e4]


def forward(name, x, slope, **kw):
    f = getattr(ops, name)
    return f(x, **kw) if slope is None else f(x, slope=slope, **kw)


def backward(name, dout, z, slope, **kw):
    g = getattr(ops, name + "_backward")
    return g(dout, z, **kw) if slope is None else g(dout, z, slope=slope, **kw)


def ref_forward(name, x, slope):
    return ref.FORWARD[name](x, 0.01 if slope is None else slope)


def ref_backward(name, dout, z, slope):
    return ref.BACKWARD[name](dout, z, 0.01 if slope is None else slope)


def backward_arg(name, x, slope):
    """What the backward op reads: the input for (leaky) ReLU, the output otherwise."""
    if name in ("sigmoid", "tanh"):
        return ref_forward(name, x, slope).astype(x.dtype)
    return x


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name, slope", ACTIVATIONS, ids=ACT_IDS)
def test_forward_matches_reference(name, slope, shape, dtype, rng):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x0 = x.copy()
    y = forward(name, x, slope)
    ref.assert_close(y, ref_forward(name, x, slope), dtype)
    assert y.flags.c_contiguous
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name, slope", ACTIVATIONS, ids=ACT_IDS)
def test_backward_matches_reference(name, slope, shape, dtype, rng):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    z = backward_arg(name, x, slope)
    dout = rng.standard_normal(shape).astype(dtype)
    z0, dout0 = z.copy(), dout.copy()
    dx = backward(name, dout, z, slope)
    ref.assert_close(dx, ref_backward(name, dout, z, slope), dtype)
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(dout, dout0)


def test_leaky_relu_default_slope_is_0_01(dtype, rng):
    x = rng.standard_normal((7, 13)).astype(dtype)
    ref.assert_close(ops.leaky_relu(x), ref.leaky_relu(x, 0.01), dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    ref.assert_close(ops.leaky_relu_backward(dout, x), ref.leaky_relu_backward(dout, x, 0.01),
                     dtype)


def test_leaky_relu_backward_negative_slope_reads_input(dtype, rng):
    # With slope < 0 the output is positive where x < 0: the gradient must follow x.
    x = np.array([-2.0, -0.5, 0.5, 2.0], dtype)
    dout = np.array([1.0, 2.0, 3.0, 4.0], dtype)
    dx = ops.leaky_relu_backward(dout, x, slope=-0.5)
    np.testing.assert_array_equal(dx, np.array([-0.5, -1.0, 3.0, 4.0], dtype))


def test_relu_backward_accepts_forward_output(dtype, rng):
    x = rng.standard_normal((97, 131)).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(ops.relu_backward(dout, ops.relu(x)),
                                  ops.relu_backward(dout, x))


@pytest.mark.parametrize("name, slope", ACTIVATIONS, ids=ACT_IDS)
def test_forward_in_place(name, slope, dtype, rng):
    x = rng.standard_normal((97, 131)).astype(dtype)
    expected = ref_forward(name, x, slope)
    y = forward(name, x, slope, out=x)
    assert y is x
    ref.assert_close(x, expected, dtype)


@pytest.mark.parametrize("name, slope", ACTIVATIONS, ids=ACT_IDS)
def test_backward_in_place_over_dout(name, slope, dtype, rng):
    x = rng.standard_normal((97, 131)).astype(dtype)
    z = backward_arg(name, x, slope)
    dout = rng.standard_normal(x.shape).astype(dtype)
    expected = ref_backward(name, dout, z, slope)
    dx = backward(name, dout, z, slope, out=dout)
    assert dx is dout
    ref.assert_close(dout, expected, dtype)


@pytest.mark.parametrize("name, slope", ACTIVATIONS, ids=ACT_IDS)
def test_out_is_written_and_returned(name, slope, dtype, rng):
    x = rng.standard_normal((7, 13)).astype(dtype)
    out = np.full(x.shape, np.nan, dtype)
    assert forward(name, x, slope, out=out) is out
    ref.assert_close(out, ref_forward(name, x, slope), dtype)
    z = backward_arg(name, x, slope)
    dx = np.full(x.shape, np.nan, dtype)
    assert backward(name, x, z, slope, out=dx) is dx
    ref.assert_close(dx, ref_backward(name, x, z, slope), dtype)


def _non_contiguous(rng, layout, dtype):
    base = rng.standard_normal((40, 62)).astype(dtype)
    return base[:, ::2] if layout == "strided" else base.T


@pytest.mark.parametrize("layout", ["strided", "transposed"])
@pytest.mark.parametrize("name, slope", ACTIVATIONS, ids=ACT_IDS)
def test_non_contiguous_input_is_copied(name, slope, layout, dtype, rng):
    x = _non_contiguous(rng, layout, dtype)
    dout = _non_contiguous(rng, layout, dtype)
    assert not x.flags.c_contiguous and not dout.flags.c_contiguous
    x0, dout0 = x.copy(), dout.copy()
    y = forward(name, x, slope)
    assert y.shape == x.shape and y.flags.c_contiguous
    ref.assert_close(y, ref_forward(name, x, slope), dtype)
    z = backward_arg(name, x, slope)
    dx = backward(name, dout, z, slope)
    ref.assert_close(dx, ref_backward(name, dout, z, slope), dtype)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dout, dout0)


@pytest.mark.parametrize("name, slope", ACTIVATIONS, ids=ACT_IDS)
def test_special_values_forward_like_numpy(name, slope, dtype):
    x = np.array(SPECIAL, dtype)
    y = forward(name, x, slope)
    ref.assert_close(y, ref_forward(name, x, slope), dtype)
    assert np.isnan(y[0]), f"{name}(NaN) should be NaN"


@pytest.mark.parametrize("name, slope", ACTIVATIONS, ids=ACT_IDS)
def test_special_values_backward_like_numpy(name, slope, dtype):
    # Every pair (dout, z) of special values.
    dout, z = (a.astype(dtype) for a in np.meshgrid(SPECIAL, SPECIAL))
    dx = backward(name, dout, z, slope)
    ref.assert_close(dx, ref_backward(name, dout, z, slope), dtype)


def test_nan_gradient_propagates(dtype):
    nan = np.array([np.nan], dtype)
    one = np.array([1.0], dtype)
    assert np.isnan(ops.relu_backward(nan, one))[0]
    assert np.isnan(ops.leaky_relu_backward(nan, -one))[0]
    assert np.isnan(ops.sigmoid_backward(one, nan))[0]
    assert np.isnan(ops.tanh_backward(one, nan))[0]


def test_sigmoid_saturates_exactly_without_warnings(dtype):
    x = np.array([-np.inf, -1e4, -1e3, -200.0, 50.0, 100.0, 1e3, 1e4, np.inf], dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = ops.sigmoid(x)
        y_in_place = x.copy()
        ops.sigmoid(y_in_place, out=y_in_place)
    np.testing.assert_array_equal(y, y_in_place)
    assert y[0] == 0.0, "sigmoid(-inf) must be exactly 0"
    assert y[1] == 0.0 and y[2] == 0.0, "sigmoid(-1e3), sigmoid(-1e4) underflow to 0"
    assert 0.0 <= y[3] < 1e-30
    np.testing.assert_array_equal(y[4:], np.ones(5, dtype))  # exactly 1.0
    assert np.all(np.isfinite(y))
    ref.assert_close(y, ref.sigmoid(x), dtype)


def test_sigmoid_backward_at_saturation_is_zero(dtype):
    y = ops.sigmoid(np.array([-np.inf, -1e4, 1e4, np.inf], dtype))
    with np.errstate(all="raise"):
        dx = ops.sigmoid_backward(np.ones(4, dtype), y)
    np.testing.assert_array_equal(dx, np.zeros(4, dtype))


def test_sigmoid_is_symmetric(dtype, rng):
    x = (10 * rng.standard_normal(1000)).astype(dtype)
    ref.assert_close(ops.sigmoid(-x), 1.0 - ops.sigmoid(x).astype(np.float64), dtype)


def test_tanh_limits_without_warnings(dtype):
    x = np.array([-np.inf, -1e4, -50.0, 50.0, 1e4, np.inf], dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = ops.tanh(x)
    np.testing.assert_array_equal(y, np.array([-1, -1, -1, 1, 1, 1], dtype))


# ---------------------------------------------------------------- gradient checks


def _away_from_zero(rng, shape):
    """Values in +-[0.1, 2): finite differences never straddle the ReLU kink."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)


@pytest.mark.parametrize("name, slope", ACTIVATIONS, ids=ACT_IDS)
def test_backward_matches_numerical_gradient(name, slope, rng):
    x = _away_from_zero(rng, (4, 5))
    dout = rng.standard_normal(x.shape)

    def loss():
        return float(np.sum(dout * forward(name, x, slope)))

    numerical = ref.numerical_gradient(loss, x)
    analytic = backward(name, dout, backward_arg(name, x, slope), slope)
    np.testing.assert_allclose(analytic, numerical, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- threads


@pytest.mark.parametrize("name, slope", DISTINCT, ids=[n for n, _ in DISTINCT])
def test_forward_is_thread_independent(name, slope, determinism_shape, dtype, large_array,
                                       assert_thread_independent):
    x = large_array(determinism_shape, dtype)
    assert_thread_independent(lambda: forward(name, x, slope))


@pytest.mark.parametrize("name, slope", DISTINCT, ids=[n for n, _ in DISTINCT])
def test_backward_is_thread_independent(name, slope, determinism_shape, dtype, large_array,
                                        assert_thread_independent):
    dout = large_array(determinism_shape, dtype)
    kind = "unit" if name == "sigmoid" else "signed"
    z = large_array(determinism_shape, dtype, kind)
    assert_thread_independent(lambda: backward(name, dout, z, slope))
