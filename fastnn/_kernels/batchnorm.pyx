"""Batch-normalization kernels: batch statistics in one parallel pass and the
normalization in a second (forward), and the closed-form input gradient (backward_dx).

Statistics are computed over fixed blocks of FN_REDUCE_ROWS whole rows (mean and
squared deviations of each block, in cache), then merged block by block in a fixed order
with Chan's formula, in double precision: accurate for large means, and bitwise the
same for any thread count. Arguments are checked by fastnn.ops; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc

from .simd cimport (
    FN_ACT_IDENTITY,
    FN_PARALLEL_MIN,
    FN_REDUCE_COLS,
    FN_REDUCE_ROWS,
    fn_bn_dx_d,
    fn_bn_dx_f,
    fn_merge_mean_m2_d,
    fn_merge_mean_m2_f,
    fn_scale_shift_d,
    fn_scale_shift_f,
    fn_tile_mean_m2_d,
    fn_tile_mean_m2_f,
)

include "bn_core.pxi"


def forward(const floating[:, ::1] x, const floating[::1] gamma, const floating[::1] beta,
            floating[::1] running_mean, floating[::1] running_var, bint training,
            double momentum, double eps, floating[::1] mean, floating[::1] inv_std,
            floating[:, ::1] y, int n_threads):
    """y = (x - mean) * inv_std * gamma + beta; y may not be x.

    training: mean and inv_std = 1 / sqrt(var + eps) from the batch (biased variance,
    rows >= 2); running_mean and running_var, unless None, move towards the batch's
    statistics by `momentum` (running_var towards the UNBIASED variance). Otherwise the
    running statistics give mean and inv_std. mean and inv_std are written.
    """
    cdef floating *rm = NULL if running_mean is None else &running_mean[0]
    cdef floating *rv = NULL if running_var is None else &running_var[0]
    cdef int status
    with nogil:
        status = _bn_forward(&x[0, 0], x.shape[0], x.shape[1], &gamma[0], &beta[0], rm, rv,
                             training, momentum, eps, &mean[0], &inv_std[0], &y[0, 0],
                             n_threads, FN_ACT_IDENTITY, 0, NULL)
    if status != 0:
        raise MemoryError("batchnorm forward: cannot allocate its workspace")


def backward_dx(const floating[:, ::1] dy, const floating[:, ::1] x,
                const floating[::1] gamma, const floating[::1] mean,
                const floating[::1] inv_std, const floating[::1] sum_dy,
                const floating[::1] sum_dy_xhat, bint training, floating[:, ::1] dx,
                int n_threads):
    """The input gradient, from the column sums of dy and dy * xhat.

    training (through the batch statistics):
        dx = gamma * inv_std / N * (N * dy - sum_dy - xhat * sum_dy_xhat)
    else (running statistics are constants): dx = gamma * inv_std * dy. dx may be dy.
    """
    cdef int status
    with nogil:
        status = _bn_backward_dx(&dy[0, 0], &x[0, 0], x.shape[0], x.shape[1], &gamma[0],
                                 &mean[0], &inv_std[0], &sum_dy[0], &sum_dy_xhat[0], training,
                                 &dx[0, 0], n_threads)
    if status != 0:
        raise MemoryError("batchnorm backward: cannot allocate its workspace")
