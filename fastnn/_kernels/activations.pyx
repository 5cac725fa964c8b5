"""Element-wise activations, forward and backward, and the fused bias + activation
epilogue of a GEMM. The vectorized loops are in simd.h; here, the threads.

Arguments are checked by fastnn.ops; here they are trusted. Element-wise results do
not depend on the thread count: every element is computed the same way.
"""

from cython cimport floating
from cython.parallel cimport prange

from .simd cimport (
    FN_ACT_IDENTITY,
    FN_ACT_LEAKY_RELU,
    FN_ACT_RELU,
    FN_ACT_SIGMOID,
    FN_ACT_TANH,
    FN_PARALLEL_MIN,
    fn_act_backward_d,
    fn_act_backward_f,
    fn_act_forward_d,
    fn_act_forward_f,
    fn_bias_act_forward_d,
    fn_bias_act_forward_f,
)

# Elements per task: large enough that a call per chunk costs nothing, small enough
# to balance the threads.
cdef Py_ssize_t CHUNK = 8192


def act_forward(int act, const floating[::1] x, floating[::1] y, double slope,
                int n_threads):
    """y = f(x); y may be x."""
    cdef Py_ssize_t n = x.shape[0], c, start, size
    cdef Py_ssize_t n_chunks = (n + CHUNK - 1) // CHUNK
    cdef floating s = <floating> slope
    for c in prange(n_chunks, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * CHUNK
        size = min(CHUNK, n - start)
        if floating is float:
            fn_act_forward_f(act, &x[start], &y[start], size, s)
        else:
            fn_act_forward_d(act, &x[start], &y[start], size, s)


def act_backward(int act, const floating[::1] dout, const floating[::1] y,
                 floating[::1] dx, double slope, int n_threads):
    """dx = dout * f'(x), f' taken from y (the forward output; the input for ReLU and
    LeakyReLU with slope >= 0 gives the same); dx may be dout."""
    cdef Py_ssize_t n = dout.shape[0], c, start, size
    cdef Py_ssize_t n_chunks = (n + CHUNK - 1) // CHUNK
    cdef floating s = <floating> slope
    for c in prange(n_chunks, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * CHUNK
        size = min(CHUNK, n - start)
        if floating is float:
            fn_act_backward_f(act, &dout[start], &y[start], &dx[start], size, s)
        else:
            fn_act_backward_d(act, &dout[start], &y[start], &dx[start], size, s)


def bias_act_forward(int act, const floating[:, ::1] x, const floating[::1] bias,
                     floating[:, ::1] y, double slope, int n_threads):
    """y[r, j] = f(x[r, j] + bias[j]); y may be x."""
    cdef Py_ssize_t rows = x.shape[0], d = x.shape[1], t, r0, nr
    cdef Py_ssize_t per_task = max(1, CHUNK // d)
    cdef Py_ssize_t n_tasks = (rows + per_task - 1) // per_task
    cdef floating s = <floating> slope
    for t in prange(n_tasks, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and rows * d >= FN_PARALLEL_MIN):
        r0 = t * per_task
        nr = min(per_task, rows - r0)
        if floating is float:
            fn_bias_act_forward_f(act, &x[r0, 0], &bias[0], &y[r0, 0], nr, d, s)
        else:
            fn_bias_act_forward_d(act, &x[r0, 0], &bias[0], &y[r0, 0], nr, d, s)


# Names of the activations the kernels know, with their codes in simd.h.
ACTIVATIONS = {
    "identity": FN_ACT_IDENTITY,
    "relu": FN_ACT_RELU,
    "leaky_relu": FN_ACT_LEAKY_RELU,
    "sigmoid": FN_ACT_SIGMOID,
    "tanh": FN_ACT_TANH,
}
