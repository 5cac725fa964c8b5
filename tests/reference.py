"""Plain NumPy reference implementations of fastnn.ops: the oracle the tests compare with.

Every function computes in float64 and returns float64, whatever the input dtype, so
that float32 kernels are compared with a result more accurate than themselves.
`assert_close` says how close to the oracle counts as equal.

The backward functions mirror fastnn's conventions: ReLU, LeakyReLU, ELU, GELU and
SiLU take the forward input x, sigmoid and tanh take the forward output y.
"""

import functools

import numpy as np
from scipy.special import erfc, expit

# (rtol, atol) per dtype. For sums and products, rtol is relative to the magnitude
# of the terms (e.g. sum |x|), not to the result, which may cancel to nearly 0.
TOLERANCES = {
    np.dtype(np.float32): (1e-5, 1e-5),
    np.dtype(np.float64): (1e-12, 1e-12),
}


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _quiet(f):
    """NumPy semantics for NaN and inf (0 * inf is NaN, ...) without its warnings."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return f(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------- activations


def identity(x, slope=None):
    return _f64(x).copy()


def identity_backward(dout, y, slope=None):
    return _f64(dout).copy()


@_quiet
def relu(x, slope=None):
    """max(x, 0); np.maximum propagates NaN."""
    return np.maximum(_f64(x), 0.0)


@_quiet
def relu_backward(dout, x, slope=None):
    """dout where x > 0, else 0 (x is the forward input, or its output)."""
    return np.where(_f64(x) > 0, _f64(dout), 0.0)


@_quiet
def leaky_relu(x, slope=0.01):
    x = _f64(x)
    return np.where(x > 0, x, slope * x)


@_quiet
def leaky_relu_backward(dout, x, slope=0.01):
    dout = _f64(dout)
    return np.where(_f64(x) > 0, dout, slope * dout)


@_quiet
def sigmoid(x, slope=None):
    """1 / (1 + exp(-x)), overflow-free (scipy's expit), in float64."""
    return expit(_f64(x))


@_quiet
def sigmoid_backward(dout, y, slope=None):
    """dout * y * (1 - y), y = sigmoid(x) the forward output."""
    y = _f64(y)
    return _f64(dout) * y * (1.0 - y)


@_quiet
def tanh(x, slope=None):
    return np.tanh(_f64(x))


@_quiet
def tanh_backward(dout, y, slope=None):
    """dout * (1 - y**2), y = tanh(x) the forward output."""
    y = _f64(y)
    return _f64(dout) * (1.0 - y * y)


@_quiet
def elu(x, slope=1.0):
    """x where x > 0, else alpha * expm1(x); alpha is passed as `slope`."""
    x = _f64(x)
    return np.where(x > 0, x, slope * np.expm1(x))


@_quiet
def elu_backward(dout, x, slope=1.0):
    """dout where x > 0, else dout * alpha * exp(x)."""
    x, dout = _f64(x), _f64(dout)
    return np.where(x > 0, dout, dout * slope * np.exp(x))


def _normal_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2, written with erfc so that it keeps its
    relative accuracy for x << 0."""
    return 0.5 * erfc(-x / np.sqrt(2.0))


@_quiet
def gelu(x, slope=None):
    """x * Phi(x)."""
    x = _f64(x)
    return x * _normal_cdf(x)


@_quiet
def gelu_backward(dout, x, slope=None):
    """dout * (Phi(x) + x * phi(x))."""
    x = _f64(x)
    return _f64(dout) * (_normal_cdf(x) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi))


_K = np.sqrt(2 / np.pi)


@_quiet
def gelu_tanh(x, slope=None):
    """x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))), PyTorch's approximation."""
    x = _f64(x)
    return 0.5 * x * (1 + np.tanh(_K * (x + 0.044715 * x**3)))


@_quiet
def gelu_tanh_backward(dout, x, slope=None):
    x = _f64(x)
    t = np.tanh(_K * (x + 0.044715 * x**3))
    return _f64(dout) * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _K * (1 + 3 * 0.044715 * x * x))


@_quiet
def silu(x, slope=None):
    """x * sigmoid(x)."""
    x = _f64(x)
    return x * expit(x)


@_quiet
def silu_backward(dout, x, slope=None):
    """dout * s * (1 + x * (1 - s)), s = sigmoid(x)."""
    x = _f64(x)
    s = expit(x)
    return _f64(dout) * s * (1 + x * (1 - s))


FORWARD = {
    "identity": identity,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "elu": elu,
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "silu": silu,
}

BACKWARD = {
    "identity": identity_backward,
    "relu": relu_backward,
    "leaky_relu": leaky_relu_backward,
    "sigmoid": sigmoid_backward,
    "tanh": tanh_backward,
    "elu": elu_backward,
    "gelu": gelu_backward,
    "gelu_tanh": gelu_tanh_backward,
    "silu": silu_backward,
}

# The activations whose backward reads the forward input, not its output.
READS_INPUT = ("elu", "gelu", "gelu_tanh", "silu")


# ---------------------------------------------------------------- fused epilogues


@_quiet
def bias_activation(x, bias, activation=None, slope=0.01):
    """f(x + bias), x (N, D), bias (D,); activation None is the identity."""
    f = FORWARD["identity" if activation is None else activation]
    return f(_f64(x) + _f64(bias), slope)


@_quiet
def activation_bias_backward(dout, y, activation=None, slope=0.01):
    """(dx, dbias): dx = dout * f'(x) read from the forward output y, dbias = sum_r dx."""
    g = BACKWARD["identity" if activation is None else activation]
    dx = g(dout, y, slope)
    return dx, dx.sum(axis=0)


# ---------------------------------------------------------------- reductions


@_quiet
def column_sum(x):
    return _f64(x).sum(axis=0)


@_quiet
def row_sum(x):
    return _f64(x).sum(axis=1)


# ---------------------------------------------------------------- matmul


def _op(x, trans):
    return np.swapaxes(x, -1, -2) if trans else x


@_quiet
def matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b), op a transpose of the last two axes; batches broadcast as np.matmul."""
    return np.matmul(_op(_f64(a), trans_a), _op(_f64(b), trans_b))


# ---------------------------------------------------------------- comparison


def assert_close(got, expected, dtype, magnitude=None):
    """Assert `got` is a `dtype` array matching the float64 oracle `expected`.

    NaN must be NaN and infinities equal where the oracle has them; elsewhere
    |got - expected| <= rtol * scale + atol, scale = `magnitude` (for sums: the sum of
    the absolute terms) or |expected|.
    """
    dtype = np.dtype(dtype)
    assert isinstance(got, np.ndarray), f"expected an ndarray, got {type(got).__name__}"
    assert got.dtype == dtype, f"dtype {got.dtype}, expected {dtype}"
    expected = _f64(expected)
    assert got.shape == expected.shape, f"shape {got.shape}, expected {expected.shape}"
    rtol, atol = TOLERANCES[dtype]
    got = got.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg="NaN positions")
    inf = np.isinf(expected)
    np.testing.assert_array_equal(got[inf], expected[inf], err_msg="infinities")
    finite = np.isfinite(expected)
    scale = np.abs(expected) if magnitude is None else np.broadcast_to(_f64(magnitude),
                                                                       expected.shape)
    err = np.abs(got[finite] - expected[finite])
    bound = rtol * scale[finite] + atol
    bad = ~(err <= bound)
    if bad.any():
        worst = np.argmax(err - bound)
        raise AssertionError(
            f"{bad.sum()} of {bad.size} elements differ beyond rtol={rtol}, atol={atol}: "
            f"worst error {err[worst]:.3g} > bound {bound[worst]:.3g}"
        )


def numerical_gradient(loss, x, h=1e-6):
    """Central differences of the scalar loss() with respect to each element of x.

    x is perturbed in place, one element at a time, and restored.
    """
    grad = np.empty(x.shape, np.float64)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = loss()
        x[i] = old - h
        minus = loss()
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad
