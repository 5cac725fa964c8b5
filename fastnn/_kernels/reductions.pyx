"""Row and column sums, the fused activation backward + bias-gradient column sum, and
the two column sums of the batch-norm backward pass.

Column sums run over fixed blocks of FN_REDUCE_ROWS whole rows; each block sums its
rows in order into a partial row, and the partial rows are added in order (in column
chunks of FN_REDUCE_COLS, spread over the threads). The blocks depend on the shape
alone, so results are bitwise the same for any thread count. Arguments are checked by fastnn.ops; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange
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


# What a tiled column reduction sums per element.
cdef enum:
    SUM_X = 0            # out += x
    SUM_ACT_GRAD = 1     # dx = g * f'(y); out += dx
    SUM_BN_GRAD = 2      # out += dy; out2 += dy * (x - mean) * inv_std


cdef int _column_sums(int mode, int act, const floating *g, const floating *y, floating *dx,
                      const floating *mean, const floating *inv_std, floating *out,
                      floating *out2, Py_ssize_t rows, Py_ssize_t d, floating slope,
                      int n_threads) noexcept nogil:
    """Column sums of `rows` x `d` row-major data, per `mode`; out2 only for SUM_BN_GRAD.

    Returns -1 when the workspace cannot be allocated, 0 otherwise.
    """
    cdef Py_ssize_t n_rb = (rows + FN_REDUCE_ROWS - 1) // FN_REDUCE_ROWS
    cdef Py_ssize_t n_cb = (d + FN_REDUCE_COLS - 1) // FN_REDUCE_COLS
    cdef int n_out = 2 if mode == SUM_BN_GRAD else 1
    cdef floating *partial = out
    cdef floating *partial2 = out2
    cdef floating *acc
    cdef floating *acc2
    cdef Py_ssize_t rb, cb, r, r0, r1, c0, width, off
    cdef bint threaded = n_threads > 1 and rows * d >= FN_PARALLEL_MIN
    if n_rb > 1:
        partial = <floating *> malloc(n_out * n_rb * d * sizeof(floating))
        if partial == NULL:
            return -1
        partial2 = partial + n_rb * d
    # A task is a block of whole rows: it streams through contiguous memory while its
    # partial row stays in cache.
    for rb in prange(n_rb, schedule='static', num_threads=n_threads,
                     use_threads_if=threaded):
        r0 = rb * FN_REDUCE_ROWS
        r1 = min(r0 + FN_REDUCE_ROWS, rows)
        acc = partial + rb * d
        acc2 = partial2 + rb * d
        memset(acc, 0, d * sizeof(floating))
        if mode == SUM_BN_GRAD:
            memset(acc2, 0, d * sizeof(floating))
        for r in range(r0, r1):
            off = r * d
            if mode == SUM_X:
                if floating is float:
                    fn_add_row_f(acc, g + off, d)
                else:
                    fn_add_row_d(acc, g + off, d)
            elif mode == SUM_ACT_GRAD:
                if floating is float:
                    fn_act_backward_acc_f(act, g + off, y + off, dx + off, acc, d, slope)
                else:
                    fn_act_backward_acc_d(act, g + off, y + off, dx + off, acc, d, slope)
            elif floating is float:
                fn_bn_grad_acc_f(g + off, y + off, mean, inv_std, acc, acc2, d)
            else:
                fn_bn_grad_acc_d(g + off, y + off, mean, inv_std, acc, acc2, d)
    if n_rb > 1:
        for cb in prange(n_cb, schedule='static', num_threads=n_threads,
                         use_threads_if=threaded):
            c0 = cb * FN_REDUCE_COLS
            width = min(FN_REDUCE_COLS, d - c0)
            _sum_partials(out + c0, partial + c0, n_rb, d, width)
            if mode == SUM_BN_GRAD:
                _sum_partials(out2 + c0, partial2 + c0, n_rb, d, width)
        free(partial)
    return 0


cdef inline void _sum_partials(floating *out, const floating *partial, Py_ssize_t n_rb,
                               Py_ssize_t stride, Py_ssize_t width) noexcept nogil:
    """out[j] = sum over rb, in order, of partial[rb * stride + j]."""
    cdef Py_ssize_t rb
    memcpy(out, partial, width * sizeof(floating))
    for rb in range(1, n_rb):
        if floating is float:
            fn_add_row_f(out, partial + rb * stride, width)
        else:
            fn_add_row_d(out, partial + rb * stride, width)


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
