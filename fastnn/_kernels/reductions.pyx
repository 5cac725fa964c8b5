"""Row and column sums, the fused activation backward + bias-gradient column sum, and
the two column sums of the batch-norm backward pass.

Column sums run over fixed blocks of FN_REDUCE_ROWS whole rows; each block sums its
rows in order into a partial row, and the partial rows are added in order (in column
chunks of FN_REDUCE_COLS, spread over the threads). The blocks depend on the shape
alone, so results are bitwise the same for any thread count. Arguments are checked by fastnn.ops; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from .simd cimport (
    FN_PARALLEL_MIN,
    FN_REDUCE_COLS,
    FN_REDUCE_ROWS,
    fn_act_backward_acc_d,
    fn_act_backward_acc_f,
    fn_add_row_d,
    fn_add_row_f,
    fn_bn_grad_acc_d,
    fn_bn_grad_acc_f,
    fn_sum_d,
    fn_sum_f,
)


include "reduce_core.pxi"


def column_sum(const floating[:, ::1] x, floating[::1] out, int n_threads):
    """out[j] = sum_r x[r, j]."""
    cdef int status
    with nogil:
        status = _column_sums(SUM_X, 0, &x[0, 0], NULL, NULL, NULL, NULL, &out[0], NULL,
                              x.shape[0], x.shape[1], 0, n_threads)
    if status != 0:
        raise MemoryError("column_sum: cannot allocate its workspace")


def act_backward_column_sum(int act, const floating[:, ::1] dout, const floating[:, ::1] y,
                            floating[:, ::1] dx, floating[::1] dbias, double slope,
                            int n_threads):
    """dx = dout * f'(y) and dbias[j] = sum_r dx[r, j], in one pass; dx may be dout."""
    cdef int status
    with nogil:
        status = _column_sums(SUM_ACT_GRAD, act, &dout[0, 0], &y[0, 0], &dx[0, 0], NULL, NULL,
                              &dbias[0], NULL, dout.shape[0], dout.shape[1], <floating> slope,
                              n_threads)
    if status != 0:
        raise MemoryError("act_backward_column_sum: cannot allocate its workspace")


def batchnorm_grad_sums(const floating[:, ::1] dy, const floating[:, ::1] x,
                       const floating[::1] mean, const floating[::1] inv_std,
                       floating[::1] sum_dy, floating[::1] sum_dy_xhat, int n_threads):
    """sum_dy[j] = sum_r dy[r, j]; sum_dy_xhat[j] = sum_r dy[r, j] * xhat[r, j], where
    xhat = (x - mean) * inv_std is recomputed on the fly."""
    cdef int status
    with nogil:
        status = _column_sums(SUM_BN_GRAD, 0, &dy[0, 0], &x[0, 0], NULL, &mean[0], &inv_std[0],
                              &sum_dy[0], &sum_dy_xhat[0], dy.shape[0], dy.shape[1], 0,
                              n_threads)
    if status != 0:
        raise MemoryError("batchnorm_grad_sums: cannot allocate its workspace")


def row_sum(const floating[:, ::1] x, floating[::1] out, int n_threads):
    """out[r] = sum_j x[r, j]."""
    cdef Py_ssize_t rows = x.shape[0], d = x.shape[1], r
    for r in prange(rows, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and rows * d >= FN_PARALLEL_MIN):
        if floating is float:
            out[r] = fn_sum_f(&x[r, 0], d)
        else:
            out[r] = fn_sum_d(&x[r, 0], d)
