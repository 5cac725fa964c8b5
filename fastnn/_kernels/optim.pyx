"""Fused optimizer updates: one pass over parameters, gradients and state.

Each function updates a flat span of parameters in place, in chunks spread over the
threads; every element is computed the same way whatever the thread count. The
update rules are documented in fastnn/optim/ and in simd_impl.h. Arguments are
checked by fastnn.optim; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass

from .simd cimport (
    FN_CHUNK,
    FN_PARALLEL_MIN,
    fn_adagrad_d,
    fn_adagrad_f,
    fn_adam_d,
    fn_adam_f,
    fn_any_nonfinite_d,
    fn_any_nonfinite_f,
    fn_rmsprop_d,
    fn_rmsprop_f,
    fn_sgd_d,
    fn_sgd_f,
    fn_sum_squares_d,
    fn_sum_squares_f,
)

# Elements per block of sum_squares: blocks, and the order their sums are added in,
# depend on the size alone.
cdef Py_ssize_t _NORM_BLOCK = 8192
NORM_BLOCK = _NORM_BLOCK


def sgd(floating[::1] p, const floating[::1] g, floating[::1] v, double lr, double momentum,
        double weight_decay, bint nesterov, int n_threads):
    """SGD step; v is the momentum buffer, or None for plain SGD."""
    cdef Py_ssize_t n = p.shape[0], c, start
    cdef floating *vp = NULL
    if v is not None:
        vp = &v[0]
    for c in prange((n + FN_CHUNK - 1) // FN_CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads, use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * FN_CHUNK
        if floating is float:
            fn_sgd_f(&p[start], &g[start], NULL if vp == NULL else vp + start,
                     min(FN_CHUNK, n - start), <float> lr, <float> momentum, <float> weight_decay,
                     nesterov)
        else:
            fn_sgd_d(&p[start], &g[start], NULL if vp == NULL else vp + start,
                     min(FN_CHUNK, n - start), lr, momentum, weight_decay, nesterov)


def adagrad(floating[::1] p, const floating[::1] g, floating[::1] s, double lr, double eps,
            double weight_decay, int n_threads):
    cdef Py_ssize_t n = p.shape[0], c, start
    for c in prange((n + FN_CHUNK - 1) // FN_CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads, use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * FN_CHUNK
        if floating is float:
            fn_adagrad_f(&p[start], &g[start], &s[start], min(FN_CHUNK, n - start), <float> lr,
                         <float> eps, <float> weight_decay)
        else:
            fn_adagrad_d(&p[start], &g[start], &s[start], min(FN_CHUNK, n - start), lr, eps,
                         weight_decay)


def rmsprop(floating[::1] p, const floating[::1] g, floating[::1] s, double lr, double alpha,
            double eps, double weight_decay, int n_threads):
    cdef Py_ssize_t n = p.shape[0], c, start
    for c in prange((n + FN_CHUNK - 1) // FN_CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads, use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * FN_CHUNK
        if floating is float:
            fn_rmsprop_f(&p[start], &g[start], &s[start], min(FN_CHUNK, n - start), <float> lr,
                         <float> alpha, <float> eps, <float> weight_decay)
        else:
            fn_rmsprop_d(&p[start], &g[start], &s[start], min(FN_CHUNK, n - start), lr, alpha,
                         eps, weight_decay)


def adam(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
         double step_size, double beta1, double beta2, double eps, double inv_sqrt_bc2,
         double weight_decay, double decay, int n_threads):
    cdef Py_ssize_t n = p.shape[0], c, start
    for c in prange((n + FN_CHUNK - 1) // FN_CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads, use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * FN_CHUNK
        if floating is float:
            fn_adam_f(&p[start], &g[start], &m[start], &v[start], min(FN_CHUNK, n - start),
                      <float> step_size, <float> beta1, <float> beta2, <float> eps,
                      <float> inv_sqrt_bc2, <float> weight_decay, <float> decay)
        else:
            fn_adam_d(&p[start], &g[start], &m[start], &v[start], min(FN_CHUNK, n - start),
                      step_size, beta1, beta2, eps, inv_sqrt_bc2, weight_decay, decay)


def sum_squares(const floating[::1] x, double[::1] block_sums, int n_threads):
    """block_sums[b] = sum of x[i]^2 over block b of NORM_BLOCK elements."""
    cdef Py_ssize_t n = x.shape[0], b, start
    for b in prange(block_sums.shape[0], nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = b * _NORM_BLOCK
        if floating is float:
            block_sums[b] = fn_sum_squares_f(&x[start], min(_NORM_BLOCK, n - start))
        else:
            block_sums[b] = fn_sum_squares_d(&x[start], min(_NORM_BLOCK, n - start))


def all_finite(const floating[::1] x, int n_threads):
    """Whether every x[i] is finite (neither infinite nor NaN)."""
    cdef Py_ssize_t n = x.shape[0], c, start, bad = 0
    for c in prange((n + FN_CHUNK - 1) // FN_CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads, use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * FN_CHUNK
        if floating is float:
            bad += fn_any_nonfinite_f(&x[start], min(FN_CHUNK, n - start))
        else:
            bad += fn_any_nonfinite_d(&x[start], min(FN_CHUNK, n - start))
    return bad == 0
