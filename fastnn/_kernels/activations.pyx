"""Element-wise activations, forward and backward, and the fused bias + activation
epilogue of a GEMM. The vectorized loops are in simd.h; here, the threads.

Arguments are checked by fastnn.ops; here they are trusted. Element-wise results do
not depend on the thread count: every element is computed the same way.
"""

from cython cimport floating
from cython.parallel cimport prange
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass

from .simd cimport (
    FN_ACT_ELU,
    FN_ACT_GELU,
    FN_ACT_GELU_TANH,
    FN_ACT_IDENTITY,
    FN_ACT_LEAKY_RELU,
    FN_ACT_READS_INPUT,
    FN_ACT_RELU,
    FN_ACT_SIGMOID,
    FN_ACT_SILU,
    FN_ACT_TANH,
    FN_CHUNK,
    FN_PARALLEL_MIN,
    fn_act_backward_d,
    fn_act_backward_f,
    fn_act_forward_d,
    fn_act_forward_f,
    fn_bias_act_forward_d,
    fn_bias_act_forward_f,
)

include "activation_core.pxi"


def act_forward(int act, const floating[::1] x, floating[::1] y, double slope,
                int n_threads):
    """y = f(x); y may be x."""
    with nogil:
        _act_forward(act, &x[0], &y[0], x.shape[0], <floating> slope, n_threads)


def act_backward(int act, const floating[::1] dout, const floating[::1] y,
                 floating[::1] dx, double slope, int n_threads):
    """dx = dout * f'(x), f' taken from y: the forward output (the input for ReLU and
    LeakyReLU with slope >= 0 gives the same), or the input for the activations in
    READS_INPUT; dx may be dout."""
    with nogil:
        _act_backward(act, &dout[0], &y[0], &dx[0], dout.shape[0], <floating> slope,
                      n_threads)


def bias_act_forward(int act, const floating[:, ::1] x, const floating[::1] bias,
                     floating[:, ::1] y, double slope, int n_threads):
    """y[r, j] = f(x[r, j] + bias[j]); y may be x."""
    with nogil:
        _bias_act_forward(act, &x[0, 0], &bias[0], &y[0, 0], NULL, x.shape[0], x.shape[1],
                          <floating> slope, n_threads)


# Names of the activations the kernels know, with their codes in simd.h (a parameter,
# LeakyReLU's slope or ELU's alpha, goes in `slope`).
ACTIVATIONS = {
    "identity": FN_ACT_IDENTITY,
    "relu": FN_ACT_RELU,
    "leaky_relu": FN_ACT_LEAKY_RELU,
    "sigmoid": FN_ACT_SIGMOID,
    "tanh": FN_ACT_TANH,
    "elu": FN_ACT_ELU,
    "gelu": FN_ACT_GELU,
    "gelu_tanh": FN_ACT_GELU_TANH,
    "silu": FN_ACT_SILU,
}

# Those whose backward reads the forward input rather than the output.
READS_INPUT = frozenset(name for name, code in ACTIVATIONS.items()
                        if FN_ACT_READS_INPUT(code))
