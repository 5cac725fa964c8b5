"""Row and column sums, and the fused activation backward + bias-gradient column sum.

Column sums run over fixed tiles of FN_REDUCE_ROWS x FN_REDUCE_COLS; each tile sums
its rows in order into a partial row, and the partial rows are added in order. The
tiling depends on the shape alone, so results are bitwise the same for any thread
count. Arguments are checked by fastnn.ops; here they are trusted.
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
    fn_sum_d,
    fn_sum_f,
)


cdef int _column_sum(int act, const floating *g, const floating *y, floating *dx,
                     floating *out, Py_ssize_t rows, Py_ssize_t d, floating slope,
                     int n_threads) noexcept nogil:
    """out[j] = sum_r v[r, j] with v = g, or, when dx is given, v = dx = g * f'(y).

    Returns -1 when the workspace cannot be allocated, 0 otherwise.
    """
    cdef Py_ssize_t n_rb = (rows + FN_REDUCE_ROWS - 1) // FN_REDUCE_ROWS
    cdef Py_ssize_t n_cb = (d + FN_REDUCE_COLS - 1) // FN_REDUCE_COLS
    cdef floating *partial = out
    cdef floating *acc
    cdef Py_ssize_t t, rb, cb, r, r0, r1, c0, width, off
    cdef bint threaded = n_threads > 1 and rows * d >= FN_PARALLEL_MIN
    if n_rb > 1:
        partial = <floating *> malloc(n_rb * d * sizeof(floating))
        if partial == NULL:
            return -1
    for t in prange(n_rb * n_cb, schedule='static', num_threads=n_threads,
                    use_threads_if=threaded):
        rb = t // n_cb
        cb = t % n_cb
        r0 = rb * FN_REDUCE_ROWS
        r1 = min(r0 + FN_REDUCE_ROWS, rows)
        c0 = cb * FN_REDUCE_COLS
        width = min(FN_REDUCE_COLS, d - c0)
        acc = partial + rb * d + c0
        memset(acc, 0, width * sizeof(floating))
        for r in range(r0, r1):
            off = r * d + c0
            if dx == NULL:
                if floating is float:
                    fn_add_row_f(acc, g + off, width)
                else:
                    fn_add_row_d(acc, g + off, width)
            elif floating is float:
                fn_act_backward_acc_f(act, g + off, y + off, dx + off, acc, width, slope)
            else:
                fn_act_backward_acc_d(act, g + off, y + off, dx + off, acc, width, slope)
    if n_rb > 1:
        for cb in prange(n_cb, schedule='static', num_threads=n_threads,
                         use_threads_if=threaded):
            c0 = cb * FN_REDUCE_COLS
            width = min(FN_REDUCE_COLS, d - c0)
            memcpy(out + c0, partial + c0, width * sizeof(floating))
            for rb in range(1, n_rb):
                if floating is float:
                    fn_add_row_f(out + c0, partial + rb * d + c0, width)
                else:
                    fn_add_row_d(out + c0, partial + rb * d + c0, width)
        free(partial)
    return 0


def column_sum(const floating[:, ::1] x, floating[::1] out, int n_threads):
    """out[j] = sum_r x[r, j]."""
    cdef int status
    with nogil:
        status = _column_sum(0, &x[0, 0], NULL, NULL, &out[0], x.shape[0], x.shape[1],
                             0, n_threads)
    if status != 0:
        raise MemoryError("column_sum: cannot allocate its workspace")


def act_backward_column_sum(int act, const floating[:, ::1] dout, const floating[:, ::1] y,
                            floating[:, ::1] dx, floating[::1] dbias, double slope,
                            int n_threads):
    """dx = dout * f'(y) and dbias[j] = sum_r dx[r, j], in one pass; dx may be dout."""
    cdef int status
    with nogil:
        status = _column_sum(act, &dout[0, 0], &y[0, 0], &dx[0, 0], &dbias[0],
                             dout.shape[0], dout.shape[1], <floating> slope, n_threads)
    if status != 0:
        raise MemoryError("act_backward_column_sum: cannot allocate its workspace")


def row_sum(const floating[:, ::1] x, floating[::1] out, int n_threads):
    """out[r] = sum_j x[r, j]."""
    cdef Py_ssize_t rows = x.shape[0], d = x.shape[1], r
    for r in prange(rows, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and rows * d >= FN_PARALLEL_MIN):
        if floating is float:
            out[r] = fn_sum_f(&x[r, 0], d)
        else:
            out[r] = fn_sum_d(&x[r, 0], d)
