"""Validated entry points to fastnn's compiled kernels.

Every function here checks its arguments before any compiled code runs:

- arrays must be `numpy.ndarray` of float32 or float64 (`TypeError` otherwise), all
  of the same dtype, with at least one dimension (`ValueError` for 0-d);
- shapes must agree (`ValueError` naming the argument and the expected shape);
- `out=`, when given, must have exactly the result's shape and dtype, be C-contiguous
  and writeable, and must not overlap an input (element-wise functions accept the
  input itself, for in-place use).

Inputs that are not C-contiguous are copied once into a contiguous array, except for
`matmul`, which reads a transposed (Fortran-ordered) matrix in place by flipping the
BLAS transpose flag. A copy larger than `MAX_IMPLICIT_COPY_BYTES` is refused with a
`ValueError` instead: pass `np.ascontiguousarray(x)` if that copy is really wanted.

All functions use `fastnn.get_num_threads()` threads (fewer while other processes keep
some of the CPUs busy, see fastnn._threads). NaN and inf propagate as in NumPy.
"""

import sys
import types

import numpy as np

from . import _checks
from ._checks import (
    NON_NEGATIVE,
    UNIT,
    check_array,
    check_choice,
    check_contiguous,
    check_eps,
    check_float,
    check_int,
    check_output,
    check_same_dtype,
    check_same_shape,
    check_slope,
)
from ._kernels import _openmp
from ._kernels import activations as _act
from ._kernels import batchnorm as _bn
from ._kernels import dropout as _drop
from ._kernels import matmul as _mm
from ._kernels import reductions as _red
from ._keys import random_key
from ._threads import kernel_threads

__all__ = [
    "ACTIVATIONS",
    "MAX_IMPLICIT_COPY_BYTES",  # noqa: F822 (a property of the module: see _Ops)
    "activation_bias_backward",
    "batchnorm_backward",
    "batchnorm_forward",
    "bias_activation",
    "column_sum",
    "dropout",
    "elu",
    "elu_backward",
    "gelu",
    "gelu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "matmul",
    "relu",
    "relu_backward",
    "row_sum",
    "sigmoid",
    "sigmoid_backward",
    "silu",
    "silu_backward",
    "tanh",
    "tanh_backward",
]



class _Ops(types.ModuleType):
    """fastnn.ops with MAX_IMPLICIT_COPY_BYTES as a checked setting that the argument
    checks read at each call (they live in fastnn._checks, which ops imports)."""

    @property
    def MAX_IMPLICIT_COPY_BYTES(self):
        return _checks.copy_limit[0]

    @MAX_IMPLICIT_COPY_BYTES.setter
    def MAX_IMPLICIT_COPY_BYTES(self, value):
        _checks.copy_limit[0] = check_int(value, "MAX_IMPLICIT_COPY_BYTES", NON_NEGATIVE)

    def __dir__(self):
        return [*super().__dir__(), "MAX_IMPLICIT_COPY_BYTES"]


sys.modules[__name__].__class__ = _Ops

ACTIVATIONS = tuple(_act.ACTIVATIONS)

_INT_MAX = 2**31 - 1  # BLAS dimensions are C ints
_OPENMP = _openmp.openmp_version() != 0

def _activation_code(activation, slope, need_sign=False):
    name = "identity" if activation is None else activation
    check_choice(activation, "activation", (*ACTIVATIONS, None))
    slope = check_slope(slope)
    if need_sign and name == "leaky_relu" and slope < 0:
        raise ValueError(
            "slope: the fused backward reads the forward output, which needs slope >= 0; "
            "use leaky_relu_backward with the input for a negative slope"
        )
    if need_sign and name in _act.READS_INPUT:
        raise ValueError(
            f"activation: the gradient of {name!r} reads the forward input, not the output; "
            "use its ops backward function with the input, then column_sum"
        )
    return _act.ACTIVATIONS[name], slope


# ---------------------------------------------------------------- matmul


def _transposed_view(x, trans):
    """(array, trans) with the array C-contiguous in its last two axes when possible.

    A matrix whose transpose is C-contiguous (e.g. `w.T`) is passed as that transpose
    with the flag flipped, so BLAS reads it in place.
    """
    if not x.flags.c_contiguous:
        swapped = np.swapaxes(x, -1, -2)
        if swapped.flags.c_contiguous:
            return swapped, not trans
    return x, trans


def matmul(a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
    """op(a) @ op(b), where op(x) is x, or its transpose (last two axes) if trans_x.

    Shapes: (M, K) @ (K, N) -> (M, N); batched (B, M, K) @ (B, K, N) -> (B, M, N),
    where either operand may be 2-D, or have a batch of 1, to be shared by every item.
    With accumulate=True (2-D only, `out` required) the product is added to `out`, in
    the same BLAS call: how layers accumulate weight gradients.
    GEMM comes from the BLAS backend (fastnn.get_blas(): an OpenBLAS, or MKL; which
    products go where, and how they are threaded, fastnn.show_config() says): fastnn's
    threads each multiply a slab of the output (or, batched, their share of the items)
    with single-threaded BLAS calls, unless the backend threads whole products itself.
    """
    a = check_array(a, "a")
    b = check_array(b, "b")
    check_same_dtype([("a", a), ("b", b)])
    for name, x in (("a", a), ("b", b)):
        if x.ndim not in (2, 3):
            raise ValueError(f"{name}: expected a 2-D or 3-D array, got {x.ndim}-D")
    a, trans_a = _transposed_view(a, bool(trans_a))
    b, trans_b = _transposed_view(b, bool(trans_b))

    m, ka = a.shape[-2:][::-1] if trans_a else a.shape[-2:]
    kb, n = b.shape[-2:][::-1] if trans_b else b.shape[-2:]
    if ka != kb:
        raise ValueError(
            f"matmul: op(a) is {m}x{ka} and op(b) is {kb}x{n}: inner dimensions differ"
        )
    batch_a = a.shape[0] if a.ndim == 3 else 1
    batch_b = b.shape[0] if b.ndim == 3 else 1
    if batch_a != batch_b and 1 not in (batch_a, batch_b):
        raise ValueError(f"matmul: batch sizes differ: a has {batch_a}, b has {batch_b}")
    batched = a.ndim == 3 or b.ndim == 3
    batch = max(batch_a, batch_b)
    shape = (batch, m, n) if batched else (m, n)
    # BLAS takes int dimensions. The 2-D kernel makes several calls along long rows or
    # inner dimensions; a row length (of a, b or the output), and a batched item's
    # every dimension, must fit in one.
    limited = [("a's row length", a.shape[-1]), ("b's row length", b.shape[-1]),
               ("the output's row length", n)]
    if batched:
        limited += [("an item's row count", m), ("the inner dimension", ka)]
    for what, size in limited:
        if size > _INT_MAX:
            raise ValueError(f"matmul: {what} is {size}, over BLAS's limit of 2**31 - 1")
    if accumulate and (out is None or batched):
        raise ValueError("matmul: accumulate=True needs 2-D operands and an out= array")
    out = check_output(out, shape, a.dtype, [("a", a), ("b", b)])
    a = check_contiguous(a, "a")
    b = check_contiguous(b, "b")
    if out.size == 0:
        return out
    if ka == 0:
        if not accumulate:
            out.fill(0)
        return out

    threads = _gemm_threads()
    if not batched:
        _mm.matmul(a, b, out, trans_a, trans_b, bool(accumulate), threads)
    elif b.ndim == 2 and not trans_a and a.ndim == 3:
        # One tall GEMM: (B*M, K) @ op(b) -> (B*M, N).
        _mm.matmul(a.reshape(-1, a.shape[2]), b, out.reshape(-1, n), False, trans_b, False,
                   threads)
    else:
        a3 = a if a.ndim == 3 else a[None]
        b3 = b if b.ndim == 3 else b[None]
        if batch >= threads:
            _mm.matmul_batched(a3, b3, out, trans_a, trans_b, threads)
        else:  # fewer items than threads: each item's product is split instead
            for i in range(batch):
                _mm.matmul(a3[i % len(a3)], b3[i % len(b3)], out[i], trans_a, trans_b, False,
                           threads)
    return out


def _gemm_threads():
    """Threads that split a matrix product: fastnn's, each running one-thread BLAS; 1 in
    a build without OpenMP, where BLAS itself has fastnn's thread count."""
    return kernel_threads() if _OPENMP else 1


# ---------------------------------------------------------------- activations


def _forward(code, x, out, slope):
    x = check_array(x, "x")
    out = check_output(out, x.shape, x.dtype, [("x", x)], inplace_ok=("x",))
    x = check_contiguous(x, "x")
    if x.size:
        _act.act_forward(code, x.reshape(-1), out.reshape(-1), slope, kernel_threads())
    return out


def _backward(code, dout, y, out, slope, y_name):
    dout = check_array(dout, "dout")
    y = check_array(y, y_name)
    check_same_dtype([("dout", dout), (y_name, y)])
    check_same_shape([("dout", dout), (y_name, y)])
    out = check_output(out, dout.shape, dout.dtype, [("dout", dout), (y_name, y)],
                       inplace_ok=("dout",))
    dout, y = check_contiguous(dout, "dout"), check_contiguous(y, y_name)
    if dout.size:
        _act.act_backward(code, dout.reshape(-1), y.reshape(-1), out.reshape(-1), slope,
                          kernel_threads())
    return out


def relu(x, out=None):
    """max(x, 0) element-wise (NaN stays NaN). `out` may be `x`."""
    return _forward(_act.ACTIVATIONS["relu"], x, out, 0.0)


def relu_backward(dout, x, out=None):
    """dout where x > 0, else 0. `x` is the forward input (its output works too)."""
    return _backward(_act.ACTIVATIONS["relu"], dout, x, out, 0.0, "x")


def leaky_relu(x, slope=0.01, out=None):
    """x where x > 0, else slope * x. `out` may be `x`."""
    return _forward(_act.ACTIVATIONS["leaky_relu"], x, out, check_slope(slope))


def leaky_relu_backward(dout, x, slope=0.01, out=None):
    """dout where x > 0, else slope * dout. `x` is the forward input."""
    return _backward(_act.ACTIVATIONS["leaky_relu"], dout, x, out, check_slope(slope), "x")


def sigmoid(x, out=None):
    """1 / (1 + exp(-x)), computed without overflow for any x; exactly 0 and 1 at -inf
    and +inf. `out` may be `x`."""
    return _forward(_act.ACTIVATIONS["sigmoid"], x, out, 0.0)


def sigmoid_backward(dout, y, out=None):
    """dout * y * (1 - y), where y = sigmoid(x) is the forward OUTPUT."""
    return _backward(_act.ACTIVATIONS["sigmoid"], dout, y, out, 0.0, "y")


def tanh(x, out=None):
    """tanh(x) element-wise. `out` may be `x`."""
    return _forward(_act.ACTIVATIONS["tanh"], x, out, 0.0)


def tanh_backward(dout, y, out=None):
    """dout * (1 - y**2), where y = tanh(x) is the forward OUTPUT."""
    return _backward(_act.ACTIVATIONS["tanh"], dout, y, out, 0.0, "y")


def elu(x, alpha=1.0, out=None):
    """x where x > 0, else alpha * (exp(x) - 1) (PyTorch's ELU; any finite alpha).
    `out` may be `x`."""
    return _forward(_act.ACTIVATIONS["elu"], x, out, check_float(alpha, "alpha"))


def elu_backward(dout, x, alpha=1.0, out=None):
    """dout where x > 0, else dout * alpha * exp(x), where x is the forward INPUT."""
    return _backward(_act.ACTIVATIONS["elu"], dout, x, out, check_float(alpha, "alpha"), "x")


def _gelu_code(approximate):
    check_choice(approximate, "approximate", ("none", "tanh"))
    return _act.ACTIVATIONS["gelu" if approximate == "none" else "gelu_tanh"]


def gelu(x, approximate="none", out=None):
    """x * Phi(x), Phi the standard normal CDF: x / 2 * (1 + erf(x / sqrt(2))); with
    approximate="tanh", x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))), as
    PyTorch's GELU. `out` may be `x`."""
    return _forward(_gelu_code(approximate), x, out, 0.0)


def gelu_backward(dout, x, approximate="none", out=None):
    """dout * (Phi(x) + x * phi(x)), phi the standard normal density, where x is the
    forward INPUT; with approximate="tanh", dout times the derivative of that formula:
    (1 + t) / 2 + x / 2 * (1 - t**2) * sqrt(2 / pi) * (1 + 3 * 0.044715 * x**2), t the
    tanh of the forward."""
    return _backward(_gelu_code(approximate), dout, x, out, 0.0, "x")


def silu(x, out=None):
    """x * sigmoid(x) (SiLU, or swish), without overflow for any x. `out` may be `x`."""
    return _forward(_act.ACTIVATIONS["silu"], x, out, 0.0)


def silu_backward(dout, x, out=None):
    """dout * s * (1 + x * (1 - s)), s = sigmoid(x), where x is the forward INPUT."""
    return _backward(_act.ACTIVATIONS["silu"], dout, x, out, 0.0, "x")


# ---------------------------------------------------------------- fused epilogues


def _matrix(x, name):
    x = check_array(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows, features), got {x.ndim}-D")
    return x


def bias_activation(x, bias, activation=None, slope=0.01, out=None):
    """f(x + bias) in one pass: x (N, D), bias (D,), f one of ACTIVATIONS (None: identity;
    "gelu_tanh": GELU's tanh approximation); `slope` is LeakyReLU's slope or ELU's alpha.

    The epilogue of a linear layer; `out` may be `x` to apply it in place after a GEMM.
    """
    code, slope = _activation_code(activation, slope)
    x = _matrix(x, "x")
    bias = check_array(bias, "bias")
    check_same_dtype([("x", x), ("bias", bias)])
    if bias.shape != (x.shape[1],):
        raise ValueError(f"bias: expected shape ({x.shape[1]},) to match x, got {bias.shape}")
    out = check_output(out, x.shape, x.dtype, [("x", x), ("bias", bias)], inplace_ok=("x",))
    x, bias = check_contiguous(x, "x"), check_contiguous(bias, "bias")
    if x.size:
        _act.bias_act_forward(code, x, bias, out, slope, kernel_threads())
    return out


def activation_bias_backward(dout, y, activation=None, slope=0.01, out=None, dbias=None):
    """(dx, dbias) in one pass: dx = dout * f'(x), dbias = dx.sum(axis=0).

    dout and y are (N, D); y is the forward OUTPUT f(x + bias) (for LeakyReLU this
    needs slope >= 0; ELU, GELU and SiLU, whose gradients read the input, are refused).
    `out` (for dx) may be `dout`. dbias is (D,) and is overwritten.
    The column sum is bitwise the same for any thread count.
    """
    code, slope = _activation_code(activation, slope, need_sign=True)
    dout = _matrix(dout, "dout")
    y = _matrix(y, "y")
    check_same_dtype([("dout", dout), ("y", y)])
    check_same_shape([("dout", dout), ("y", y)])
    inputs = [("dout", dout), ("y", y)]
    out = check_output(out, dout.shape, dout.dtype, inputs, inplace_ok=("dout",))
    dbias = check_output(dbias, (dout.shape[1],), dout.dtype, [*inputs, ("out", out)], name="dbias")
    dout, y = check_contiguous(dout, "dout"), check_contiguous(y, "y")
    if dout.shape[0] == 0 or dout.shape[1] == 0:
        dbias.fill(0)
        return out, dbias
    _red.act_backward_column_sum(code, dout, y, out, dbias, slope, kernel_threads())
    return out, dbias


# ---------------------------------------------------------------- reductions


def column_sum(x, out=None):
    """x.sum(axis=0) for a 2-D x, bitwise the same for any thread count."""
    x = _matrix(x, "x")
    out = check_output(out, (x.shape[1],), x.dtype, [("x", x)])
    x = check_contiguous(x, "x")
    if x.shape[0] == 0 or x.shape[1] == 0:
        out.fill(0)
    else:
        _red.column_sum(x, out, kernel_threads())
    return out


def row_sum(x, out=None):
    """x.sum(axis=1) for a 2-D x, bitwise the same for any thread count."""
    x = _matrix(x, "x")
    out = check_output(out, (x.shape[0],), x.dtype, [("x", x)])
    x = check_contiguous(x, "x")
    if x.shape[0] == 0 or x.shape[1] == 0:
        out.fill(0)
    else:
        _red.row_sum(x, out, kernel_threads())
    return out


# ---------------------------------------------------------------- batch normalization


def _vector(v, name, length, dtype):
    v = check_array(v, name)
    if v.shape != (length,):
        raise ValueError(f"{name}: expected shape ({length},), got {v.shape}")
    if v.dtype != dtype:
        raise TypeError(f"{name}: dtype {v.dtype} differs from x's {dtype}")
    return v


def batchnorm_forward(x, gamma, beta, running_mean=None, running_var=None, training=True,
                      momentum=0.1, eps=1e-5, out=None):
    """Batch normalization of x (N, D) over its rows -> (y, mean, inv_std).

    training=True: normalize with the batch mean and BIASED variance; when given,
    running_mean and running_var are updated in place with the new batch weighted by
    `momentum` (running_var receives the UNBIASED variance), as in PyTorch. Needs N > 1.
    training=False: normalize with running_mean and running_var (both required).
    y = (x - mean) * inv_std * gamma + beta with inv_std = 1 / sqrt(var + eps). The
    returned mean and inv_std are what batchnorm_backward needs.
    """
    x = _matrix(x, "x")
    n, d = x.shape
    gamma = _vector(gamma, "gamma", d, x.dtype)
    beta = _vector(beta, "beta", d, x.dtype)
    eps = check_eps(eps)
    momentum = check_float(momentum, "momentum", UNIT)
    running = [(name, v) for name, v in (("running_mean", running_mean),
                                         ("running_var", running_var)) if v is not None]
    for name, v in running:
        _vector(v, name, d, x.dtype)
        if not (v.flags.c_contiguous and v.flags.writeable):
            raise ValueError(f"{name}: must be a writeable C-contiguous array (updated in place)")
    out = check_output(out, x.shape, x.dtype, [("x", x), ("gamma", gamma), ("beta", beta)])
    x = check_contiguous(x, "x")
    gamma, beta = check_contiguous(gamma, "gamma"), check_contiguous(beta, "beta")
    if training and n < 2:
        raise ValueError(f"batchnorm_forward: training needs more than 1 row per batch, got {n}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batchnorm_forward: training=False needs running_mean and running_var")
    mean = np.empty(d, x.dtype)
    inv_std = np.empty(d, x.dtype)
    if d == 0:
        return out, mean, inv_std
    _bn.forward(x, gamma, beta, running_mean, running_var, bool(training), momentum, eps,
                mean, inv_std, out, kernel_threads())
    return out, mean, inv_std


def batchnorm_backward(dout, x, gamma, mean, inv_std, training=True, out=None):
    """Gradients of batchnorm_forward -> (dx, dgamma, dbeta), in two passes over dout.

    x is the forward INPUT; mean and inv_std are what batchnorm_forward returned.
    training=True is the closed form through the batch statistics:
        dx = gamma * inv_std / N * (N * dout - sum(dout) - xhat * sum(dout * xhat));
    training=False treats the running statistics as constants: dx = gamma * inv_std * dout.
    dgamma = sum(dout * xhat), dbeta = sum(dout), summed over rows; bitwise the same for
    any thread count. `out` (for dx) may be `dout`.
    """
    dout = _matrix(dout, "dout")
    x = _matrix(x, "x")
    check_same_dtype([("dout", dout), ("x", x)])
    check_same_shape([("dout", dout), ("x", x)])
    n, d = x.shape
    gamma = _vector(gamma, "gamma", d, x.dtype)
    mean = _vector(mean, "mean", d, x.dtype)
    inv_std = _vector(inv_std, "inv_std", d, x.dtype)
    out = check_output(out, x.shape, x.dtype, [("dout", dout), ("x", x)], inplace_ok=("dout",))
    dout, x = check_contiguous(dout, "dout"), check_contiguous(x, "x")
    gamma, mean = check_contiguous(gamma, "gamma"), check_contiguous(mean, "mean")
    inv_std = check_contiguous(inv_std, "inv_std")
    dgamma = np.zeros(d, x.dtype)
    dbeta = np.zeros(d, x.dtype)
    if n == 0 or d == 0:
        return out, dgamma, dbeta
    threads = kernel_threads()
    _red.batchnorm_grad_sums(dout, x, mean, inv_std, dbeta, dgamma, threads)
    _bn.backward_dx(dout, x, gamma, mean, inv_std, dbeta, dgamma, bool(training), out, threads)
    return out, dgamma, dbeta


# ---------------------------------------------------------------- dropout

def dropout(x, p, seed, step, out=None):
    """Inverted dropout: each element is zeroed with probability p, the rest scaled by
    1 / (1 - p), so that the expectation is x.

    Element i is dropped when a hash of (seed, step, i) says so: the mask depends on
    nothing else (not on the thread count), and the backward pass is the same call
    applied to the upstream gradient with the same (seed, step). `out` may be `x`.
    """
    p = check_float(p, "p", UNIT)
    seed = check_int(seed, "seed", NON_NEGATIVE)
    step = check_int(step, "step", NON_NEGATIVE)
    x = check_array(x, "x")
    out = check_output(out, x.shape, x.dtype, [("x", x)], inplace_ok=("x",))
    x = check_contiguous(x, "x")
    if x.size == 0:
        return out
    if p == 1:
        out.fill(0)
        return out
    threshold = min(round(p * 2**32), 2**32 - 1)
    _drop.dropout(x.reshape(-1), out.reshape(-1), random_key(seed, step), threshold,
                  1 / (1 - p), kernel_threads())
    return out
